"""Generated SLO rules and dashboard in a real Prometheus: it scrapes the fixed exposition
of tests/e2e/test_monitoring_rules.py (10% 5xx on /users/{id}, 499s on /orders), records
each objective's ratios with the values that exposition implies, fires exactly the
burn-rate alerts they imply, and answers every expression of the generated dashboard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_metrics.slo.cli import main
from tests.e2e.test_monitoring_rules import FakeMetricsApp
from tests.support.prometheus_server import PrometheusServer

# The fake app's buckets; 2.5 s is one of them.
OPTIONS = [
    "--buckets", "0.01,0.05,0.5,2.5",
    "--availability", "99.9", "--latency", "2.5:99", "--route", "/users/{id}",
]
GRAFANA = {"$__rate_interval": "1m", "$__range": "5m", "$job": ".*", "$route": ".*"}
RATIO = "slo:http_request_errors:ratio_rate5m"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    rules = tmp_path_factory.mktemp("slo") / "rules.yml"
    assert main(["rules", *OPTIONS, "-o", str(rules)]) == 0
    with FakeMetricsApp() as app:
        server = PrometheusServer(
            [f"127.0.0.1:{app.port}"],
            job_name="example-app",
            scrape_interval="1s",
            evaluation_interval="1s",
            rule_files=[rules],
            startup_timeout=20,
        )
        with server:
            server.wait_for_scrapes(2, timeout=15)
            server.wait_for(
                lambda: len(server.query(RATIO)) == 4,
                timeout=10,
                message="the four objectives' ratios to be recorded",
            )
            yield server
        assert not server.running


def test_recorded_ratios_match_the_exposition(prometheus: PrometheusServer) -> None:
    ratios = {
        (s["metric"]["slo"], s["metric"].get("route", "")): float(s["value"][1])
        for s in prometheus.query(RATIO)
    }
    assert {key: pytest.approx(value, abs=1e-9) for key, value in ratios.items()} == {
        # 10 5xx among 152 requests (the 499s and the 404s are traffic)
        ("availability", ""): 10 / 152,
        ("availability", "/users/{id}"): 0.1,
        # 6 of the /orders 499s took longer than 2.5 s
        ("latency-2.5s", ""): 6 / 152,
        ("latency-2.5s", "/users/{id}"): 0,
    }
    for sample in prometheus.query(RATIO):
        assert set(sample["metric"]) <= {"__name__", "job", "slo", "route"}


def test_exactly_the_implied_alerts_fire(prometheus: PrometheusServer) -> None:
    expected = {
        # 6.6% and 10% bad against a 0.1% budget: above 14.4x, page and ticket
        ("HTTPErrorBudgetBurnFast", "page", "availability", ""),
        ("HTTPErrorBudgetBurnSlow", "ticket", "availability", ""),
        ("HTTPErrorBudgetBurnFast", "page", "availability", "/users/{id}"),
        ("HTTPErrorBudgetBurnSlow", "ticket", "availability", "/users/{id}"),
        # 3.9% slow against a 1% budget: 3.9x, a ticket but no page; /users/{id}: none
        ("HTTPErrorBudgetBurnSlow", "ticket", "latency-2.5s", ""),
    }

    def firing() -> set[tuple[str, str, str, str]]:
        return {
            (
                a["labels"]["alertname"],
                a["labels"]["severity"],
                a["labels"]["slo"],
                a["labels"].get("route", ""),
            )
            for a in prometheus.alerts()
            if a["state"] == "firing" and a["labels"]["alertname"].startswith("HTTPErrorBudget")
        }

    prometheus.wait_for(lambda: firing() == expected, timeout=10, message="the SLO alerts")
    for alert in prometheus.alerts():
        if alert["labels"]["alertname"].startswith("HTTPErrorBudget"):
            assert alert["labels"]["job"] == "example-app"
            assert alert["annotations"]["summary"].startswith("example-app burns its ")


def test_every_dashboard_expression_returns_data(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    out = tmp_path / "dashboard.json"
    assert main(["dashboard", *OPTIONS, "-o", str(out)]) == 0
    dashboard = json.loads(out.read_text(encoding="utf-8"))
    targets = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert any(title.startswith("Burn rate") for title, _ in targets)
    for title, expr in targets:
        for variable, value in GRAFANA.items():
            expr = expr.replace(variable, value)
        assert prometheus.query(expr), f"{title}: no data for {expr}"
    left = {
        s["metric"]["job"]: float(s["value"][1])
        for title, expr in targets
        if title == "Error budget left: latency-2.5s (/users/{id})"
        for s in prometheus.query(expr.replace("$job", ".*"))
    }
    assert left == {"example-app": 1.0}  # no slow request there: the whole budget left

"""Checks for example_apps/monitoring: rules, rule unit tests, scrape config, dashboard.

The last part runs the real Prometheus (tests/support/prometheus_server.py)
against a tiny stdlib HTTP server that serves a fixed, hand-written exposition
text, and evaluates every recording-rule, alert and dashboard expression
through the query API.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.paths import ROOT
from tests.support.prometheus_server import PrometheusAPIError, PrometheusServer
from tests.support.promtool import assert_promtool_ok, check_metrics

MONITORING = ROOT / "example_apps" / "monitoring"
RULES = MONITORING / "rules.yml"
RULES_TEST = MONITORING / "rules_test.yml"
PROM_CONFIG = MONITORING / "prometheus.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

METRIC_NAMES = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_request_duration_seconds_sum",
    "http_request_duration_seconds_count",
    "http_requests_in_flight",
    "http_request_exceptions_total",
}

# Values Grafana would put in for its template variables when evaluating.
TEMPLATE_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "5m",
    "job": ".*",
    "route": ".*",
}


# ----------------------------------------------------------------------------- promtool
def test_rules_pass_promtool_check() -> None:
    output = assert_promtool_ok(["check", "rules", RULES])
    assert "SUCCESS" in output


def test_rules_unit_tests_pass() -> None:
    output = assert_promtool_ok(["test", "rules", RULES_TEST.name], cwd=MONITORING)
    assert "SUCCESS" in output


def test_example_prometheus_config_is_valid() -> None:
    output = assert_promtool_ok(["check", "config", PROM_CONFIG])
    assert "rules.yml" in output  # the rule file was found and checked too


def test_example_config_scrapes_example_apps_on_loopback() -> None:
    text = PROM_CONFIG.read_text()
    for port in (8000, 8001, 8002):
        assert f"127.0.0.1:{port}" in text
    assert re.search(r"^rule_files:\s*\n\s*- rules\.yml\s*$", text, re.MULTILINE)


def recording_rules_in_file() -> list[str]:
    return re.findall(r"^\s*- record:\s*(\S+)\s*$", RULES.read_text(), re.MULTILINE)


def alerting_rules_in_file() -> list[str]:
    return re.findall(r"^\s*- alert:\s*(\S+)\s*$", RULES.read_text(), re.MULTILINE)


def test_rules_cover_the_expected_alerts() -> None:
    assert set(alerting_rules_in_file()) == {
        "HTTPRequestErrorRatioHigh",
        "HTTPRequestLatencyP99High",
        "HTTPRequestsInFlightSaturated",
        "HTTPTargetDown",
    }
    assert {
        "route:http_requests:rate5m",
        "route:http_request_errors:ratio_rate5m",
        "route:http_request_duration_seconds:p99_5m",
    } <= set(recording_rules_in_file())
    # every alert is exercised by the unit tests
    tests_text = RULES_TEST.read_text()
    for alert in alerting_rules_in_file():
        assert f"alertname: {alert}" in tests_text, alert


# ----------------------------------------------------------------------------- dashboard
def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels inside collapsed rows
    return panels


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title + refId, raw expr) for every query target of the dashboard."""
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"])
        for panel in all_panels(load_dashboard())
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def substitute(expr: str) -> str:
    """Replace Grafana template variables ($name, ${name}, [[name]]) with test values."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in TEMPLATE_VARIABLES:
            raise AssertionError(f"unknown template variable {name!r} in {expr!r}")
        return TEMPLATE_VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def test_dashboard_structure() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"]
    assert dashboard["uid"]
    assert 36 <= dashboard["schemaVersion"] <= 41

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    datasource_vars = [v for v in variables.values() if v["type"] == "datasource"]
    assert len(datasource_vars) == 1
    assert datasource_vars[0]["query"] == "prometheus"
    ds_ref = "${" + datasource_vars[0]["name"] + "}"
    for name in ("job", "route"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == ds_ref
        assert var["includeAll"] and var["allValue"] == ".*"
        assert "label_values(http_requests_total" in json.dumps(var["query"])

    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": ds_ref}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no targets"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == ds_ref, panel["title"]
            metrics = set(re.findall(r"\b(http_[a-z_]+)\b", target["expr"]))
            assert metrics and metrics <= METRIC_NAMES, (panel["title"], metrics)

    titles = {p["title"] for p in panels}
    assert {
        "Request rate by route",
        "Error ratio by route (5xx)",
        "Latency p50 / p95 / p99 by route",
        "Requests in flight by instance",
        "Top exceptions",
    } <= titles
    latency = next(p for p in panels if p["title"] == "Latency p50 / p95 / p99 by route")
    quantiles = sorted(
        re.match(r"histogram_quantile\(([\d.]+),", t["expr"]).group(1)  # type: ignore[union-attr]
        for t in latency["targets"]
    )
    assert quantiles == ["0.5", "0.95", "0.99"]
    for target in latency["targets"]:
        assert "rate(http_request_duration_seconds_bucket{" in target["expr"]
        assert "[$__rate_interval]" in target["expr"]


def test_substitute_replaces_all_variables() -> None:
    assert substitute('rate(x{job=~"$job",route=~"${route}"}[$__rate_interval])') == (
        'rate(x{job=~".*",route=~".*"}[1m])'
    )
    for _, expr in dashboard_expressions():
        assert "$" not in substitute(expr)


# ----------------------------------------------------------------------------- fake app
# Fixed exposition text in the format of the middleware's default naming preset.
# Counter, histogram and _sum values are multiplied by the number of scrapes
# served so far (1, 2, 3, ...), so rates are non-zero and ratios constant:
# /users/{id}: 10% 5xx; /orders: 499s only (error ratio 0).
EXPOSITION = """\
# HELP http_requests_total Total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="GET",route="/users/{id}",status="200"} 90
http_requests_total{method="GET",route="/users/{id}",status="500"} 10
http_requests_total{method="POST",route="/orders",status="201"} 40
http_requests_total{method="POST",route="/orders",status="499"} 10
http_requests_total{method="_OTHER",route="__unmatched__",status="404"} 2
# HELP http_request_duration_seconds HTTP request duration in seconds.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le="0.01",method="GET",route="/users/{id}",status="200"} 10
http_request_duration_seconds_bucket{le="0.05",method="GET",route="/users/{id}",status="200"} 60
http_request_duration_seconds_bucket{le="0.5",method="GET",route="/users/{id}",status="200"} 88
http_request_duration_seconds_bucket{le="2.5",method="GET",route="/users/{id}",status="200"} 90
http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/users/{id}",status="200"} 90
http_request_duration_seconds_count{method="GET",route="/users/{id}",status="200"} 90
http_request_duration_seconds_sum{method="GET",route="/users/{id}",status="200"} 4.5
http_request_duration_seconds_bucket{le="0.01",method="GET",route="/users/{id}",status="500"} 0
http_request_duration_seconds_bucket{le="0.05",method="GET",route="/users/{id}",status="500"} 2
http_request_duration_seconds_bucket{le="0.5",method="GET",route="/users/{id}",status="500"} 6
http_request_duration_seconds_bucket{le="2.5",method="GET",route="/users/{id}",status="500"} 10
http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/users/{id}",status="500"} 10
http_request_duration_seconds_count{method="GET",route="/users/{id}",status="500"} 10
http_request_duration_seconds_sum{method="GET",route="/users/{id}",status="500"} 7.25
http_request_duration_seconds_bucket{le="0.01",method="POST",route="/orders",status="201"} 0
http_request_duration_seconds_bucket{le="0.05",method="POST",route="/orders",status="201"} 5
http_request_duration_seconds_bucket{le="0.5",method="POST",route="/orders",status="201"} 30
http_request_duration_seconds_bucket{le="2.5",method="POST",route="/orders",status="201"} 40
http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/orders",status="201"} 40
http_request_duration_seconds_count{method="POST",route="/orders",status="201"} 40
http_request_duration_seconds_sum{method="POST",route="/orders",status="201"} 12.5
http_request_duration_seconds_bucket{le="0.01",method="POST",route="/orders",status="499"} 0
http_request_duration_seconds_bucket{le="0.05",method="POST",route="/orders",status="499"} 0
http_request_duration_seconds_bucket{le="0.5",method="POST",route="/orders",status="499"} 1
http_request_duration_seconds_bucket{le="2.5",method="POST",route="/orders",status="499"} 4
http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/orders",status="499"} 10
http_request_duration_seconds_count{method="POST",route="/orders",status="499"} 10
http_request_duration_seconds_sum{method="POST",route="/orders",status="499"} 31
http_request_duration_seconds_bucket{le="0.01",method="_OTHER",route="__unmatched__",status="404"} 2
http_request_duration_seconds_bucket{le="0.05",method="_OTHER",route="__unmatched__",status="404"} 2
http_request_duration_seconds_bucket{le="0.5",method="_OTHER",route="__unmatched__",status="404"} 2
http_request_duration_seconds_bucket{le="2.5",method="_OTHER",route="__unmatched__",status="404"} 2
http_request_duration_seconds_bucket{le="+Inf",method="_OTHER",route="__unmatched__",status="404"} 2
http_request_duration_seconds_count{method="_OTHER",route="__unmatched__",status="404"} 2
http_request_duration_seconds_sum{method="_OTHER",route="__unmatched__",status="404"} 0.004
# HELP http_requests_in_flight Number of HTTP requests currently in progress.
# TYPE http_requests_in_flight gauge
http_requests_in_flight{method="GET"} 3
http_requests_in_flight{method="POST"} 1
# HELP http_request_exceptions_total Total number of unhandled exceptions raised by the app.
# TYPE http_request_exceptions_total counter
http_request_exceptions_total{exception_type="ValueError",method="GET",route="/users/{id}"} 7
http_request_exceptions_total{exception_type="TimeoutError",method="GET",route="/users/{id}"} 3
"""


def render_exposition(scrape_number: int) -> str:
    """EXPOSITION with counter/histogram samples scaled by ``scrape_number``."""
    lines = []
    for line in EXPOSITION.splitlines():
        if line and not line.startswith("#") and not line.startswith("http_requests_in_flight"):
            series, value = line.rsplit(" ", 1)
            line = f"{series} {float(value) * scrape_number:g}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class FakeMetricsApp:
    """A stdlib HTTP server on 127.0.0.1 serving ``render_exposition`` at /metrics."""

    def __init__(self) -> None:
        self.scrapes = 0
        self._lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                with app._lock:
                    app.scrapes += 1
                    body = render_exposition(app.scrapes).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def __enter__(self) -> FakeMetricsApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "fake metrics server thread did not stop"


def test_fake_exposition_passes_promtool_lint() -> None:
    check_metrics(render_exposition(1))
    check_metrics(render_exposition(7).encode())


def test_check_metrics_reports_findings() -> None:
    bad = "# TYPE requests counter\nrequests 1\n"
    with pytest.raises(AssertionError, match="_total"):
        check_metrics(bad)


# ----------------------------------------------------------------------------- real Prometheus
@pytest.fixture(scope="module")
def fake_app() -> Iterator[FakeMetricsApp]:
    with FakeMetricsApp() as app:
        yield app


@pytest.fixture(scope="module")
def prometheus(fake_app: FakeMetricsApp) -> Iterator[PrometheusServer]:
    server = PrometheusServer(
        [f"127.0.0.1:{fake_app.port}"],
        job_name="example-app",
        scrape_interval="1s",
        evaluation_interval="1s",
        rule_files=[RULES],
        startup_timeout=20,
    )
    with server:
        server.wait_for_scrapes(2, timeout=15)
        # recording rules need a rule evaluation after the second scrape
        server.wait_for(
            lambda: (
                server.query("route:http_request_duration_seconds:p99_5m")
                and server.query("route:http_request_errors:ratio_rate5m")
            ),
            timeout=10,
            message="recording rules to produce data",
        )
        yield server
    assert not server.running


def test_prometheus_scrapes_fake_app(
    prometheus: PrometheusServer, fake_app: FakeMetricsApp
) -> None:
    targets = prometheus.targets()
    assert len(targets) == 1
    assert targets[0]["health"] == "up", targets[0].get("lastError")
    assert targets[0]["labels"]["job"] == "example-app"
    assert targets[0]["labels"]["instance"] == f"127.0.0.1:{fake_app.port}"
    assert fake_app.scrapes >= 2


def test_all_rules_load_and_evaluate_healthy(prometheus: PrometheusServer) -> None:
    def evaluated_groups() -> list[dict[str, Any]] | None:
        groups = prometheus.rules()
        healthy = all(r["health"] == "ok" for g in groups for r in g["rules"])
        return groups if groups and healthy else None

    groups = prometheus.wait_for(
        evaluated_groups, timeout=10, message="every rule to be evaluated healthy"
    )
    assert groups is not None
    loaded = [r for g in groups for r in g["rules"]]
    assert sorted(r["name"] for r in loaded if r["type"] == "recording") == sorted(
        recording_rules_in_file()
    )
    assert sorted(r["name"] for r in loaded if r["type"] == "alerting") == sorted(
        alerting_rules_in_file()
    )


def test_recording_rule_expressions_return_data(prometheus: PrometheusServer) -> None:
    rules = [r for g in prometheus.rules("record") for r in g["rules"]]
    assert rules
    for rule in rules:
        result = prometheus.query(rule["query"])
        assert result, f"recording rule {rule['name']} returned no data: {rule['query']}"
        for sample in result:
            assert set(sample["metric"]) >= {"job"}, (rule["name"], sample)
        # the recorded series exist as well
        assert prometheus.query(rule["name"]), f"no series recorded for {rule['name']}"


def test_alert_expressions_evaluate(prometheus: PrometheusServer) -> None:
    rules = [r for g in prometheus.rules("alert") for r in g["rules"]]
    assert len(rules) == len(alerting_rules_in_file())
    for rule in rules:
        prometheus.query(rule["query"])  # raises PrometheusAPIError on a bad expression


def test_recorded_values_match_the_fixed_exposition(prometheus: PrometheusServer) -> None:
    ratios = {
        s["metric"]["route"]: float(s["value"][1])
        for s in prometheus.query('route:http_request_errors:ratio_rate5m{job="example-app"}')
    }
    assert ratios["/users/{id}"] == pytest.approx(0.1)
    assert ratios["/orders"] == 0  # 499 is not an error
    assert ratios["__unmatched__"] == 0  # 404 is not an error
    p99 = {
        s["metric"]["route"]: float(s["value"][1])
        for s in prometheus.query("route:http_request_duration_seconds:p99_5m")
    }
    assert 0.5 < p99["/users/{id}"] <= 2.5
    assert p99["/orders"] == pytest.approx(2.5)  # 99th percentile lies in the +Inf bucket
    in_flight = prometheus.query("instance:http_requests_in_flight:sum")
    assert [float(s["value"][1]) for s in in_flight] == [4.0]


@pytest.mark.parametrize(
    ("where", "expr"), dashboard_expressions(), ids=[w for w, _ in dashboard_expressions()]
)
def test_dashboard_expression_returns_data(
    prometheus: PrometheusServer, where: str, expr: str
) -> None:
    promql = substitute(expr)
    result = prometheus.query(promql)
    assert result, f"{where}: no data for {promql}"
    now = time.time()
    series = prometheus.query_range(promql, now - 10, now, "1s")
    assert series, f"{where}: no range data for {promql}"


def test_invalid_promql_raises(prometheus: PrometheusServer) -> None:
    with pytest.raises(PrometheusAPIError, match="bad_data"):
        prometheus.query("sum(rate(http_requests_total[1m])")


# ----------------------------------------------------------------------------- helper lifecycle
def test_prometheus_server_is_stopped_and_cleaned_up() -> None:
    server = PrometheusServer([], extra_flags=["--enable-feature=exemplar-storage"])
    with server:
        url = server.url
        workdir = server.workdir
        assert server.running
        with urllib.request.urlopen(f"{url}/-/healthy", timeout=5) as resp:
            assert resp.status == 200
        assert server.targets() == []
    assert not server.running
    assert not workdir.exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/-/healthy", timeout=2)

"""The dashboard of `http-metrics dashboard`: the shipped example is its output for the
defaults, every preset and namespace reads its own series, and objectives add an SLO row
whose burn rates read the ratios the rules of the same options record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from asgi_metrics.slo.cli import main
from tests.support.paths import ROOT
from tests.unit.test_slo_rules import series_names

DASHBOARD = ROOT / "example_apps" / "monitoring" / "grafana-dashboard.json"
OBJECTIVES = ["--availability", "99.9", "--latency", "0.25:99", "--route", "/users/{id}"]


def generate(tmp_path: Path, command: str, *args: str) -> str:
    out = tmp_path / f"{command}.out"
    assert main([command, *args, "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p["targets"]]


def test_shipped_dashboard_is_the_generated_default(tmp_path: Path) -> None:
    assert generate(tmp_path, "dashboard") == DASHBOARD.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("naming", "namespace", "requests", "route", "uid"),
    [
        ("default", "", "http_requests_total", "route", "http-request-metrics"),
        ("default", "shop", "shop_http_requests_total", "route", "http-request-metrics-shop"),
        (
            "otel",
            "",
            "http_server_request_duration_seconds_count",
            "http_route",
            "http-request-metrics-otel",
        ),
        (
            "otel",
            "shop",
            "shop_http_server_request_duration_seconds_count",
            "http_route",
            "http-request-metrics-shop-otel",
        ),
    ],
)
def test_every_panel_reads_the_series_of_the_configuration(
    tmp_path: Path, naming: str, namespace: str, requests: str, route: str, uid: str
) -> None:
    dashboard = json.loads(
        generate(tmp_path, "dashboard", "--naming", naming, "--namespace", namespace)
    )
    rules = yaml.safe_load(
        generate(tmp_path, "rules", "--naming", naming, "--namespace", namespace)
    )
    exported = {
        name
        for group in rules["groups"]
        for rule in group["rules"]
        for name in series_names(rule["expr"])
        if ":" not in name and name != "up"
    }
    for expr in expressions(dashboard):
        assert series_names(expr) <= exported, expr
        assert f'{route}=~"$route"' in expr or "$route" not in expr, expr
    assert requests in " ".join(expressions(dashboard))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["job"]["definition"] == f"label_values({requests}, job)"
    assert variables["route"]["definition"] == f'label_values({requests}{{job=~"$job"}}, {route})'
    assert dashboard["uid"] == uid and len(uid) <= 40
    if naming == "otel":
        assert "http_requests_total" not in json.dumps(dashboard)


def test_a_long_namespace_keeps_the_uid_short(tmp_path: Path) -> None:
    dashboard = json.loads(generate(tmp_path, "dashboard", "--namespace", "a" * 60))
    assert len(dashboard["uid"]) <= 40
    assert dashboard["title"] == f"HTTP request metrics ({'a' * 60})"


def test_objectives_add_an_slo_row_read_from_the_recorded_ratios(tmp_path: Path) -> None:
    dashboard = json.loads(generate(tmp_path, "dashboard", *OBJECTIVES))
    rules = yaml.safe_load(generate(tmp_path, "rules", *OBJECTIVES))
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    first_row, *rest = dashboard["panels"]
    assert first_row == {
        "id": 1,
        "type": "row",
        "title": "Service level objectives",
        "collapsed": False,
        "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1},
        "panels": [],
    }
    slo_panels = rest[: rest.index(next(p for p in rest if p["type"] == "row"))]
    assert [p["title"] for p in slo_panels] == [
        f"{kind}: {slo} ({where})"
        for slo in ("availability", "latency-0.25s")
        for where in ("all routes", "/users/{id}")
        for kind in ("Error budget left", "Burn rate")
    ]
    for budget_panel, burn_panel in zip(slo_panels[::2], slo_panels[1::2], strict=True):
        assert budget_panel["gridPos"]["y"] == burn_panel["gridPos"]["y"]
        assert budget_panel["gridPos"]["w"] + burn_panel["gridPos"]["w"] == 24
        (budget,) = budget_panel["targets"]
        assert budget["instant"] and "[30d]" in budget["expr"]
        assert budget["expr"].startswith("1 - (") and budget["expr"].endswith(
            "/ 0.001" if "availability" in budget_panel["title"] else "/ 0.01"
        )
        assert series_names(budget["expr"]).isdisjoint(recorded)  # the raw series
        windows = [t["legendFormat"].split()[0] for t in burn_panel["targets"]]
        assert windows == ["1h", "6h", "1d", "3d"]
        for target in burn_panel["targets"]:
            assert series_names(target["expr"]) <= recorded, target["expr"]
            route = 'route="/users/{id}"' if "/users" in burn_panel["title"] else 'route=""'
            assert route in target["expr"]
        steps = burn_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert [s["value"] for s in steps] == [None, 1, 3, 6, 14.4]
    ids = [p["id"] for p in dashboard["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
    # The rest of the dashboard is the one without objectives, moved down.
    plain = json.loads(generate(tmp_path, "dashboard"))
    assert [p["title"] for p in dashboard["panels"][1 + len(slo_panels) :]] == [
        p["title"] for p in plain["panels"]
    ]
    assert "Objectives: 99.9% of requests without a 5xx response" in dashboard["description"]

"""The rules file of `http-metrics rules`: the shipped example is its output for the
defaults, every preset and namespace gets its own names, and each objective its ratios
over the workbook's windows and its page / ticket alerts (checked against promtool in
tests/e2e/test_slo_promtool.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from asgi_metrics.core.checks import ConfigurationError
from asgi_metrics.core.naming import metric_names
from asgi_metrics.core.settings import Settings
from asgi_metrics.slo import objectives
from asgi_metrics.slo.cli import main
from asgi_metrics.slo.names import names_for
from asgi_metrics.slo.rule_tests import rule_tests_file
from asgi_metrics.slo.rules import rules_file
from tests.support.paths import ROOT

RULES = ROOT / "example_apps" / "monitoring" / "rules.yml"
WINDOWS = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
OBJECTIVE_OPTIONS = ["--availability", "99.9", "--latency", "0.25:99", "--route", "/users/{id}"]


def generate(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 0
    return capsys.readouterr().out


def rules_of(text: str) -> list[dict[str, Any]]:
    document = yaml.safe_load(text)
    return [rule for group in document["groups"] for rule in group["rules"]]


def series_names(expr: str) -> set[str]:
    """The metric names an expression reads: its identifiers, less strings, label
    matchers, groupings, ranges, functions (followed by "(") and set operators."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|on|without|ignoring)\s*\([^)]*\)", " ", text)
    return {
        match.group(1)
        for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text)
        if not match.group(2) and match.group(1) not in ("and", "or", "unless")
    }


def test_shipped_rules_are_the_generated_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert generate(capsys, "rules") == RULES.read_text(encoding="utf-8")
    assert rules_file(names_for()) == RULES.read_text(encoding="utf-8")


@pytest.mark.parametrize("naming", ["default", "otel"])
@pytest.mark.parametrize("namespace", ["", "shop"])
def test_rules_read_only_the_series_of_the_configuration(
    capsys: pytest.CaptureFixture[str], naming: str, namespace: str
) -> None:
    text = generate(
        capsys, "rules", "--naming", naming, "--namespace", namespace, *OBJECTIVE_OPTIONS
    )
    families = metric_names(Settings.build({"naming": naming, "namespace": namespace}, environ={}))
    exported = {"up"}
    for family in families.all():
        if family.type == "counter":
            exported.add(f"{family.name}_total")
        elif family.type == "histogram":
            exported |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
        else:
            exported.add(family.name)
    rules = rules_of(text)
    recorded = {rule["record"] for rule in rules if "record" in rule}
    for rule in rules:
        read = series_names(rule["expr"])
        assert read, rule
        assert read <= exported | recorded, (rule.get("record") or rule["alert"], read)
    label = "route" if naming == "default" else "http_route"
    status = "status" if naming == "default" else "http_response_status_code"
    errors = next(r for r in rules if r.get("record", "").endswith("_errors:rate5m"))
    assert f"sum by (job, {label})" in errors["expr"]
    assert f'{status}=~"5.."' in errors["expr"]
    prefix = f"{namespace}_" if namespace else ""
    if naming == "otel":
        assert "http_requests_total" not in text  # no request counter in the otel preset
        assert f"{prefix}http_server_request_duration_seconds_count" in text
    stem = "http_request" if naming == "default" else "http_server_request"
    assert f"route:{prefix}{stem}_errors:ratio_rate5m" in recorded
    assert {f"slo:{prefix}{stem}_errors:ratio_rate{w}" for w in WINDOWS} <= recorded


def test_each_objective_records_its_ratio_over_every_window(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rules = rules_of(generate(capsys, "rules", *OBJECTIVE_OPTIONS))
    slo_records = [r for r in rules if r.get("record", "").startswith("slo:")]
    scopes = [
        {"slo": "availability"},
        {"slo": "availability", "route": "/users/{id}"},
        {"slo": "latency-0.25s"},
        {"slo": "latency-0.25s", "route": "/users/{id}"},
    ]
    assert [r["labels"] for r in slo_records] == [s for s in scopes for _ in WINDOWS]
    assert [r["record"] for r in slo_records] == [
        f"slo:http_request_errors:ratio_rate{w}" for _ in scopes for w in WINDOWS
    ]
    for rule in slo_records:
        window = rule["record"].rsplit("ratio_rate", 1)[1]
        rates = 3 if rule["labels"]["slo"] == "availability" else 2
        assert re.findall(r"\[(\w+)\]", rule["expr"]) == [window] * rates, rule
        by_route = 'route="/users/{id}"' in rule["expr"]
        assert by_route == ("route" in rule["labels"]), rule
        assert "sum by (job)" in rule["expr"]
        if rule["labels"]["slo"] == "availability":
            # 5xx over every request: a 499 is traffic, not an error.
            assert rule["expr"].count('status=~"5.."') == 1
            assert "http_requests_total" in rule["expr"]
        else:
            assert 'le="0.25"' in rule["expr"]
            assert "http_request_duration_seconds_count" in rule["expr"]


def test_the_error_matcher_takes_5xx_only() -> None:
    # PromQL regular expressions are anchored at both ends, as fullmatch.
    for status in ("500", "503", "599", "5xx"):
        assert re.fullmatch("5..", status)
    for status in ("499", "404", "200", "4xx", "other", "5000"):
        assert not re.fullmatch("5..", status)


def test_page_and_ticket_alerts_follow_the_workbook(capsys: pytest.CaptureFixture[str]) -> None:
    rules = rules_of(generate(capsys, "rules", "--availability", "99.9", "--latency", "0.25:99"))
    alerts = {
        (r["alert"], r["labels"]["slo"]): r
        for r in rules
        if r.get("alert", "").startswith("HTTPErrorBudget")
    }
    assert set(alerts) == {
        (name, slo)
        for name in ("HTTPErrorBudgetBurnFast", "HTTPErrorBudgetBurnSlow")
        for slo in ("availability", "latency-0.25s")
    }
    budgets = {"availability": 0.001, "latency-0.25s": 0.01}
    policy = {
        "HTTPErrorBudgetBurnFast": ("page", [(14.4, "1h", "5m"), (6, "6h", "30m")]),
        "HTTPErrorBudgetBurnSlow": ("ticket", [(3, "1d", "2h"), (1, "3d", "6h")]),
    }
    for (name, slo), alert in alerts.items():
        severity, conditions = policy[name]
        assert alert["labels"] == {"severity": severity, "slo": slo}
        assert "for" not in alert  # the short window is what keeps it from flapping
        found = re.findall(
            r'slo:http_request_errors:ratio_rate(\w+)\{slo="([^"]+)", route=""\} > ([\d.]+)',
            alert["expr"],
        )
        assert [(window, selected) for window, selected, _ in found] == [
            (window, slo) for _, long, short in conditions for window in (long, short)
        ]
        factors = [factor for factor, _, _ in conditions for _ in ("long", "short")]
        for (_, _, threshold), factor in zip(found, factors, strict=True):
            assert float(threshold) == pytest.approx(factor * budgets[slo], rel=1e-12)
            assert len(threshold) <= 8, threshold  # written exactly, no float noise
        # (long AND short) OR (long AND short)
        assert alert["expr"].count(" and\n") == 2 and alert["expr"].count("\nor\n") == 1
        assert "{{ $labels.job }}" in alert["annotations"]["summary"]


def test_per_route_alerts_carry_the_route(capsys: pytest.CaptureFixture[str]) -> None:
    rules = rules_of(
        generate(capsys, "rules", "--availability", "99.5", "--route", "/a", "--route", "/b")
    )
    alerts = [r for r in rules if "alert" in r and r["alert"].startswith("HTTPErrorBudget")]
    assert sorted((a["labels"].get("route", ""), a["labels"]["severity"]) for a in alerts) == [
        (route, severity) for route in ("", "/a", "/b") for severity in ("page", "ticket")
    ]
    for alert in alerts:
        route = alert["labels"].get("route", "")
        assert alert["expr"].count(f'route="{route}"') == 4
        if alert["labels"]["severity"] == "page":
            assert "> 0.072\n" in alert["expr"]  # 14.4 x 0.5%


def test_routes_are_escaped_in_promql_and_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    route = '/odd/"quoted"\\path: #{x}'
    rules = rules_of(generate(capsys, "rules", "--availability", "99.9", "--route", route))
    records = [r for r in rules if "record" in r and r.get("labels", {}).get("route") == route]
    assert len(records) == 7
    assert 'route="/odd/\\"quoted\\"\\\\path: #{x}"' in records[0]["expr"]


@pytest.mark.parametrize(
    ("buckets", "latency", "le"),
    [(None, "0.25:99", "0.25"), (None, "1:99", "1.0"), ("0.1,0.3,2", "0.3:99.5", "0.3")],
)
def test_latency_reads_the_bucket_of_its_threshold(
    capsys: pytest.CaptureFixture[str], buckets: str | None, latency: str, le: str
) -> None:
    args = ["rules", "--latency", latency] + (["--buckets", buckets] if buckets else [])
    rules = rules_of(generate(capsys, *args))
    ratio = next(r for r in rules if r.get("record") == "slo:http_request_errors:ratio_rate5m")
    assert f'le="{le}"' in ratio["expr"]
    assert ratio["expr"].startswith("1 - (")


def test_a_threshold_between_bucket_bounds_is_refused_with_the_bounds() -> None:
    names = names_for()
    with pytest.raises(ConfigurationError) as raised:
        objectives.latency("0.3:99", names)
    message = str(raised.value)
    assert "0.3s is not a bucket bound" in message
    assert "0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10" in message
    with pytest.raises(ConfigurationError, match=r"the bounds are 0\.1, 0\.5 \("):
        objectives.latency("0.25:99", names_for(buckets=(0.1, 0.5)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", "expected a percentage"),
        ("100", "above 0 and below 100"),
        ("0", "above 0 and below 100"),
        ("NaN", "above 0 and below 100"),
        ("90", "at least 93.06%"),
    ],
)
def test_bad_targets_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        objectives.availability(text)


def test_targets_are_kept_exactly() -> None:
    assert str(objectives.availability("99.95%")) == "99.95"
    assert objectives.availability("93.06") > 0
    found = objectives.expand(objectives.availability("99.99"), [], [])
    assert [str(o.budget) for o in found] == ["0.0001"]


def test_generated_promtool_tests_cover_every_objective() -> None:
    names = names_for()
    found = objectives.expand(
        objectives.availability("99.9"), [objectives.latency("0.25:99", names)], ["/users/{id}"]
    )
    document = yaml.safe_load(rule_tests_file(names, found, "my-rules.yml"))
    assert document["rule_files"] == ["my-rules.yml"]
    tests = document["tests"]
    assert len(tests) == 3 * len(found)
    for objective in found:
        where = "all requests" if objective.route is None else objective.route
        mine = [t for t in tests if t["name"].startswith(f"{objective.slo} ({where}):")]
        page, one_x, ticket = mine
        assert "14.4x burn pages" in page["name"]
        fired = page["alert_rule_test"][0]
        assert fired["alertname"] == "HTTPErrorBudgetBurnFast" and fired["eval_time"] == "5m"
        labels = [a["exp_labels"] for a in fired["exp_alerts"]]
        overall = {"severity": "page", "slo": objective.slo, "job": "api"}
        assert overall in labels  # it sees the route's traffic too
        if objective.route is not None:
            assert {**overall, "route": objective.route} in labels
        assert page["alert_rule_test"][-1]["exp_alerts"] == []  # quiet once the burn stopped
        assert all(t["exp_alerts"] == [] for t in one_x["alert_rule_test"])
        assert {t["alertname"] for t in one_x["alert_rule_test"]} == {"HTTPErrorBudgetBurnFast"}
        statuses = " ".join(s["series"] for s in one_x["input_series"])
        assert ('status="499"' in statuses) == (objective.threshold is None)
        assert ticket["alert_rule_test"][0]["exp_alerts"][0]["exp_labels"]["severity"] == "ticket"


def test_the_environment_does_not_change_the_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = generate(capsys, "rules", *OBJECTIVE_OPTIONS)
    monkeypatch.setenv("HTTP_METRICS_NAMESPACE", "other")
    monkeypatch.setenv("HTTP_METRICS_NAMING", "otel")
    assert generate(capsys, "rules", *OBJECTIVE_OPTIONS) == plain

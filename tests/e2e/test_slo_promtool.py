"""`http-metrics` output against the real promtool: the generated rules load, for both
naming presets and with a namespace, and the generated `promtool test rules` files prove
each objective's alerts (a 14.4x burn pages within 5 minutes, a 1x burn does not page, a
3x burn opens a ticket). They also fail against rules that do not keep the objective, and
every dashboard expression parses."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from asgi_metrics.slo.cli import main
from tests.support.promtool import assert_promtool_ok, run_promtool

OBJECTIVES = ["--availability", "99.9", "--latency", "0.25:99", "--route", "/users/{id}"]
CONFIGURATIONS = [
    pytest.param(["--naming", "default"], id="default"),
    pytest.param(["--naming", "otel"], id="otel"),
    pytest.param(["--naming", "default", "--namespace", "shop"], id="default-namespace"),
    pytest.param(["--naming", "otel", "--namespace", "shop"], id="otel-namespace"),
]
# Grafana's variables, as it fills them in before sending a query.
GRAFANA = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*", "$route": ".*"}


def write(path: Path, *args: str) -> Path:
    assert main([*args, "-o", str(path)]) == 0
    return path


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_generated_rules_pass_promtool_check(tmp_path: Path, configuration: list[str]) -> None:
    rules = write(tmp_path / "rules.yml", "rules", *configuration, *OBJECTIVES)
    output = assert_promtool_ok(["check", "rules", rules])
    # 15 base rules; per objective (4 here) 7 ratios and 2 alerts.
    assert "SUCCESS: 51 rules found" in output, output


@pytest.mark.parametrize("configuration", [CONFIGURATIONS[0], CONFIGURATIONS[3]])
def test_generated_rule_tests_prove_every_objective(
    tmp_path: Path, configuration: list[str]
) -> None:
    write(tmp_path / "slo-rules.yml", "rules", *configuration, *OBJECTIVES)
    tests = write(
        tmp_path / "slo-rules_test.yml",
        "rules-test", *configuration, *OBJECTIVES, "--rules-file", "slo-rules.yml",
    )
    output = assert_promtool_ok(["test", "rules", tests.name], cwd=tmp_path, timeout=300)
    assert "SUCCESS" in output
    text = tests.read_text(encoding="utf-8")
    # each objective, over all requests and on its route: page, 1x and ticket scenarios
    assert len(re.findall(r"^  - name: ", text, re.MULTILINE)) == 3 * 4
    assert text.count("severity: page") >= 4 and text.count("severity: ticket") >= 2


def test_generated_rule_tests_fail_against_a_looser_objective(tmp_path: Path) -> None:
    # Rules for 99.5% page only at 14.4 x 0.5% = 7.2% errors: the 99.9% tests (1.44%
    # errors must page) have to catch it.
    write(tmp_path / "rules.yml", "rules", "--availability", "99.5")
    tests = write(tmp_path / "rules_test.yml", "rules-test", "--availability", "99.9")
    run = run_promtool(["test", "rules", tests.name], cwd=tmp_path, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    assert "a 14.4x burn pages within 5m" in output
    assert "alertname: HTTPErrorBudgetBurnFast" in output


@pytest.mark.parametrize("configuration", [CONFIGURATIONS[0], CONFIGURATIONS[3]])
def test_every_dashboard_expression_parses(tmp_path: Path, configuration: list[str]) -> None:
    dashboard = json.loads(
        write(tmp_path / "dashboard.json", "dashboard", *configuration, *OBJECTIVES).read_text()
    )
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert len(exprs) > 20
    # promtool parses every expression of a rules file: one recording rule each.
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(exprs):
        for variable, value in GRAFANA.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        lines += [f"      - record: dashboard:expr{number}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = assert_promtool_ok(["check", "rules", rules])
    assert f"SUCCESS: {len(exprs)} rules found" in output


# --native: rules that read the duration histogram's classic series "or" its native one.
# promtool 2.42 takes no native histogram in input series ("{{schema:...}}" is newer), so
# the generated tests drive the classic side of each "or"; the native side is proven in
# a real Prometheus keeping only the native form (tests/e2e/test_native_prometheus.py).
NATIVE_OBJECTIVES = [*OBJECTIVES, "--latency", "0.3:95"]


@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_native_rules_pass_promtool_check(tmp_path: Path, configuration: list[str]) -> None:
    rules = write(tmp_path / "rules.yml", "rules", "--native", *configuration,
                  *NATIVE_OBJECTIVES)
    output = assert_promtool_ok(["check", "rules", rules])
    # 15 base rules; per objective (6 here) 7 ratios and 2 alerts.
    assert "SUCCESS: 69 rules found" in output, output
    assert "histogram_fraction(0, 0.3," in rules.read_text(encoding="utf-8")


@pytest.mark.parametrize("configuration", [CONFIGURATIONS[1], CONFIGURATIONS[2]])
def test_native_rule_tests_prove_the_classic_side(
    tmp_path: Path, configuration: list[str]
) -> None:
    write(tmp_path / "slo-rules.yml", "rules", "--native", *configuration, *OBJECTIVES)
    tests = write(
        tmp_path / "slo-rules_test.yml", "rules-test", "--native", *configuration, *OBJECTIVES,
        "--rules-file", "slo-rules.yml",
    )
    output = assert_promtool_ok(["test", "rules", tests.name], cwd=tmp_path, timeout=300)
    assert "SUCCESS" in output


@pytest.mark.parametrize("configuration", [CONFIGURATIONS[1], CONFIGURATIONS[2]])
def test_every_native_dashboard_expression_parses(
    tmp_path: Path, configuration: list[str]
) -> None:
    dashboard = json.loads(write(
        tmp_path / "dashboard.json", "dashboard", "--native", *configuration, *NATIVE_OBJECTIVES
    ).read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for number, expr in enumerate(exprs):
        for variable, value in GRAFANA.items():
            expr = expr.replace(variable, value)
        lines += [f"      - record: dashboard:expr{number}", f"        expr: {json.dumps(expr)}"]
    rules = tmp_path / "dashboard-rules.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert f"SUCCESS: {len(exprs)} rules found" in assert_promtool_ok(["check", "rules", rules])

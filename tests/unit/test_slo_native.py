"""`http-metrics --native`: rules and dashboard that read the duration histogram in whichever
form Prometheus keeps (classic ``_bucket``/``_count``/``_sum``, the native series, or both),
and latency thresholds that need not be bucket bounds (``histogram_fraction``). Proven
against promtool in tests/e2e/test_slo_promtool.py and against a real Prometheus that keeps
only the native form in tests/e2e/test_native_prometheus.py."""

from __future__ import annotations

import json
import re

import pytest

from asgi_metrics.core.checks import ConfigurationError
from asgi_metrics.slo import objectives
from asgi_metrics.slo.cli import main
from asgi_metrics.slo.names import names_for
from tests.unit.test_slo_rules import generate, rules_of, series_names

OBJECTIVES = ["--availability", "99.9", "--latency", "0.25:99", "--route", "/users/{id}"]


@pytest.mark.parametrize("naming", ["default", "otel"])
@pytest.mark.parametrize("namespace", ["", "shop"])
def test_every_classic_histogram_read_has_a_native_alternative(
    capsys: pytest.CaptureFixture[str], naming: str, namespace: str
) -> None:
    names = names_for(namespace, naming)
    classic = {names.bucket, names.count, names.sum}
    text = generate(capsys, "rules", "--native", "--naming", naming, "--namespace", namespace,
                    *OBJECTIVES)
    checked = 0
    for rule in rules_of(text):
        read = series_names(rule["expr"])
        if read & classic and not rule.get("record", "").endswith("_bucket:rate5m"):
            # The recorded bucket rate is classic by nature; the quantiles read it "or" the
            # native histogram.
            assert names.duration in read or f"route:{names.bucket}:rate5m" in read, rule
            assert " or" in rule["expr"] or "\nor" in rule["expr"], rule
            checked += 1
        if f"route:{names.bucket}:rate5m" in read:
            assert names.duration in read, rule
    assert checked >= 10
    plain = generate(capsys, "rules", "--naming", naming, "--namespace", namespace, *OBJECTIVES)
    for rule in rules_of(plain):
        assert names.duration not in series_names(rule["expr"]), rule


def test_a_threshold_between_bounds_is_a_native_fraction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = generate(capsys, "rules", "--native", "--latency", "0.3:99")
    ratios = [r for r in rules_of(text) if r.get("labels", {}).get("slo") == "latency-0.3s"
              and "record" in r]
    assert len(ratios) == 7
    for rule in ratios:
        window = rule["record"].rsplit("ratio_rate", 1)[1]
        assert rule["expr"].strip() == (
            "1 - histogram_fraction(0, 0.3, sum by (job)"
            f" (rate(http_request_duration_seconds[{window}])))"
        )
    # A bound reads the classic bucket "or" the native fraction.
    text = generate(capsys, "rules", "--native", "--latency", "0.25:99")
    ratio = next(r for r in rules_of(text) if r.get("record", "").endswith("ratio_rate5m")
                 and r.get("labels", {}).get("slo") == "latency-0.25s")
    assert 'le="0.25"' in ratio["expr"]
    assert "histogram_fraction(0, 0.25, sum by (job)" in ratio["expr"]


def test_without_native_the_threshold_must_still_be_a_bound() -> None:
    with pytest.raises(SystemExit):
        main(["rules", "--latency", "0.3:99"])
    with pytest.raises(SystemExit):  # promtool has no native input series to test it with
        main(["rules-test", "--native", "--latency", "0.3:99"])
    with pytest.raises(ConfigurationError, match="positive"):
        objectives.latency("-1:99", names_for(native=True))


def test_the_native_dashboard_reads_either_form(capsys: pytest.CaptureFixture[str]) -> None:
    dashboard = json.loads(generate(capsys, "dashboard", "--native", "--naming", "otel",
                                    "--latency", "0.3:99"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    quantiles = [e for e in exprs if "histogram_quantile" in e]
    assert quantiles and all(
        re.search(r"histogram_quantile\(0\.\d+, sum(?: by \([^)]*\) )?\(rate\("
                  r"http_server_request_duration_seconds\{", e)
        for e in quantiles
    )
    assert any("histogram_fraction(0, 0.3," in e for e in exprs)
    variables = {v["name"]: v["query"] for v in dashboard["templating"]["list"]
                 if "query" in v}
    assert "http_server_request_duration_seconds_count|http_server_request_duration_seconds" in (
        json.dumps(variables["job"])
    )

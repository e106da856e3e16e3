"""The fast renderer against prometheus_client's own parser, on values that are not plain."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from asgi_metrics.core.settings import Settings
from asgi_metrics.wiring import build


def test_non_finite_and_large_values_render_and_parse() -> None:
    parts = build(Settings.build({"registry": CollectorRegistry()}, environ={}))
    recorder = parts.recorder
    recorder.finish("GET", "/inf", 200, math.inf, in_flight=False)
    recorder.finish("GET", "/big", 200, 1e20, in_flight=False)
    recorder.finish("GET", "/small", 200, 1e-9, in_flight=False)
    text = parts.exposition.render(False).decode()
    sums = {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_sum"
    }
    assert sums["/inf"] == math.inf
    assert sums["/big"] == 1e20
    assert sums["/small"] == 1e-9

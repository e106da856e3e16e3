"""The protobuf exposition, decoded by Google's protobuf runtime (tests/support/protobuf.py)
and compared sample by sample with the text and OpenMetrics renderings of the same data."""

from __future__ import annotations

import gzip
import math
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary
from prometheus_client import generate_latest as generate_text
from prometheus_client.core import (
    GaugeHistogramMetricFamily,
    StateSetMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from asgi_metrics.core.naming import metric_names
from asgi_metrics.core.native import NativeSeries
from asgi_metrics.core.settings import Settings
from asgi_metrics.core.store import Snapshot
from asgi_metrics.exposition.negotiation import wants_protobuf
from asgi_metrics.exposition.protobuf import (
    PROTOBUF_CONTENT_TYPE,
    ProtobufStoreRenderer,
    encode_registry,
)
from asgi_metrics.exposition.scrape import ScrapeRequest
from asgi_metrics.wiring import build
from tests.support.protobuf import (
    COUNTER,
    GAUGE,
    HISTOGRAM,
    UNTYPED,
    by_name,
    classic_samples,
    labels_of,
    native_buckets,
    parse_delimited,
)

#: What Debian's Prometheus 2.42 sends with --enable-feature=native-histograms.
PROMETHEUS_2_42_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
    "encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,"
    "application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,"
    "*/*;q=0.1"
)
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7


def text_samples(text: str) -> list[Any]:
    """The samples of a text-format scrape as classic_samples() shapes them."""
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    )


def traffic_parts(**options: Any) -> Any:
    parts = build(Settings.build(
        {"registry": CollectorRegistry(), "time_to_first_byte": True, "request_size": True,
         "response_size": True, **options},
        environ={},
    ))
    finish = parts.recorder.finish
    finish("GET", "/users/{id}", 200, 0.004, True, None, 0.001, 0, 120)
    finish("GET", "/users/{id}", 200, 0.3, True, None, 0.2, 0, 5000,
           exemplar=(TRACE, SPAN))
    finish("POST", '/a "quoted"\\path\n', 500, 12.0, True, RuntimeError("x"), 1.0, 10, 0)
    finish("GET", "/ünïcode", 404, math.inf, True, None, 0.0, 0, 0)
    parts.recorder.start("PUT", "http")
    return parts


@pytest.mark.parametrize("options", [
    {},
    {"namespace": "shop", "const_labels": {"region": "eu-1", "tier": 'a"b'}},
    {"naming": "otel"},
    {"naming": "otel", "namespace": "svc"},
])
def test_every_store_sample_matches_the_text_format(options: dict[str, Any]) -> None:
    parts = traffic_parts(**options)
    stores = parts.exposition
    body = stores.render_protobuf()
    assert classic_samples(parse_delimited(body)) == text_samples(stores.render(False).decode())


def test_family_types_names_and_help() -> None:
    parts = traffic_parts()
    families = by_name(parts.exposition.render_protobuf())
    names = metric_names(parts.recorder.settings)
    assert families["http_requests_total"].type == COUNTER
    assert families["http_request_exceptions_total"].type == COUNTER
    assert families["http_requests_in_flight"].type == GAUGE
    for family in (names.duration, names.time_to_first_byte, names.request_size,
                   names.response_size):
        assert family is not None
        assert families[family.name].type == HISTOGRAM
        assert families[family.name].help == family.help
    # The classic +Inf bucket is written out, and without native state there is none.
    duration = families["http_request_duration_seconds"].metric[0].histogram
    assert math.isinf(duration.bucket[-1].upper_bound)
    assert not duration.HasField("schema")
    assert not duration.positive_span


def test_exemplars_are_those_of_the_openmetrics_rendering() -> None:
    parts = traffic_parts()
    families = by_name(parts.exposition.render_protobuf())
    openmetrics = parts.exposition.render(True).decode()
    expected = {
        (s.name, tuple(sorted(s.labels.items()))): s.exemplar
        for family in parse_openmetrics(openmetrics)
        for s in family.samples
        if s.exemplar is not None
    }
    got = {}
    for metric in families["http_request_duration_seconds"].metric:
        for bucket in metric.histogram.bucket:
            if bucket.HasField("exemplar"):
                labels = {**labels_of(metric), "le": _le(bucket.upper_bound)}
                got[("http_request_duration_seconds_bucket", tuple(sorted(labels.items())))] = (
                    bucket.exemplar
                )
    for metric in families["http_requests_total"].metric:
        if metric.counter.HasField("exemplar"):
            key = ("http_requests_total", tuple(sorted(labels_of(metric).items())))
            got[key] = metric.counter.exemplar
    assert got.keys() == expected.keys() and len(got) == 2
    for key, exemplar in got.items():
        want = expected[key]
        assert {pair.name: pair.value for pair in exemplar.label} == want.labels
        assert exemplar.value == want.value
        seconds = exemplar.timestamp.seconds + exemplar.timestamp.nanos / 1e9
        assert seconds == pytest.approx(float(want.timestamp), abs=1e-3)
    counter = got[("http_requests_total", (("method", "GET"), ("route", "/users/{id}"),
                                           ("status", "200")))]
    assert counter.value == 1.0  # the counter's increment, not the duration


def _le(bound: float) -> str:
    return str(floatToGoString(bound))


def _native_snapshot() -> tuple[Snapshot, dict[str, NativeSeries]]:
    key_a = ("GET", "/a", "200")
    key_b = ("GET", "/b", "200")
    key_c = ("GET", "/c", "200")
    natives = {
        # Two runs, one single bucket, negative indices, counts going up and down.
        "a": NativeSeries(schema=3, zero_threshold=2.0**-128, zero_count=2, count=17,
                          sum=9.5, positive={-9: 3, -8: 5, -7: 1, -2: 4, 4: 1, 5: 1}),
        # A negative schema (zigzag) and no populated bucket at all.
        "b": NativeSeries(schema=-2, zero_threshold=0.001, zero_count=4, count=4, sum=0.0),
        "c": NativeSeries(schema=8, zero_threshold=2.0**-128, zero_count=0, count=1,
                          sum=1.0, positive={0: 1}),
    }
    snapshot = Snapshot(
        requests={key_a: [9.5, 10.0, 6.0, 1.0], key_b: [0.0, 4.0, 0.0, 0.0],
                  key_c: [1.0, 0.0, 1.0, 0.0]},
        native={"requests": {key_a: natives["a"], key_b: natives["b"], key_c: natives["c"]}},
    )
    return snapshot, natives


def test_native_fields_decode_to_the_native_state() -> None:
    snapshot, natives = _native_snapshot()
    names = metric_names(Settings.build({}, environ={}))
    body = ProtobufStoreRenderer(names, {}, (0.1, 1.0), (100.0,)).render(snapshot)
    family = by_name(body)["http_request_duration_seconds"]
    decoded = {labels_of(metric)["route"]: metric.histogram for metric in family.metric}
    for route, native in (("/a", natives["a"]), ("/b", natives["b"]), ("/c", natives["c"])):
        histogram = decoded[route]
        assert histogram.schema == native.schema
        assert histogram.zero_threshold == native.zero_threshold
        assert histogram.zero_count == native.zero_count
        assert native_buckets(histogram) == native.positive
        assert histogram.sample_count == native.count
        assert histogram.sample_sum == native.sum
        # The classic buckets are in the same message.
        assert [b.upper_bound for b in histogram.bucket] == [0.1, 1.0, math.inf]
    spans = [(s.offset, s.length) for s in decoded["/a"].positive_span]
    assert spans == [(-9, 3), (4, 1), (5, 2)]
    assert list(decoded["/a"].positive_delta) == [3, 2, -4, 3, -3, 0]
    # No populated bucket: one empty span, so newer Prometheus still sees a native one.
    assert [(s.offset, s.length) for s in decoded["/b"].positive_span] == [(0, 0)]
    assert not decoded["/b"].positive_delta


def test_a_registry_of_every_client_type_matches_the_text_format() -> None:
    registry = CollectorRegistry()
    Counter("jobs", "Jobs done.", ["kind"], registry=registry).labels("a").inc(3)
    Gauge("temperature", "Now.", registry=registry).set(-1.5)
    histogram = Histogram("latency_seconds", "Latency.", ["op"], buckets=(0.1, 1.0),
                          registry=registry)
    histogram.labels("read").observe(0.05)
    histogram.labels("read").observe(5)
    histogram.labels("write").observe(0.5)
    Summary("payload_bytes", "Payload.", registry=registry).observe(42)
    Info("build", "Build info.", registry=registry).info({"version": "1.2", "commit": "abc"})
    Enum("state", "State.", states=["up", "down"], registry=registry).state("down")
    counter = Counter("with_exemplar", "Exemplar.", registry=registry)
    counter.inc(1, exemplar={"trace_id": "abc"})

    class Custom(Collector):
        def collect(self) -> Any:
            unknown = UnknownMetricFamily("mystery", "Unknown.", labels=["x"])
            unknown.add_metric(["1"], 7.0, timestamp=1700000000.25)
            yield unknown
            gauge_histogram = GaugeHistogramMetricFamily("queue", "Queue.", labels=["q"])
            gauge_histogram.add_metric(["a"], [("1.0", 2.0), ("+Inf", 5.0)], gsum_value=9.0)
            yield gauge_histogram
            states = StateSetMetricFamily("flags", "Flags.", labels=["f"])
            states.add_metric(["x"], {"on": True, "off": False})
            yield states

    registry.register(Custom())
    body = encode_registry(registry)
    families = by_name(body)
    assert classic_samples(list(families.values())) == text_samples(
        generate_text(registry).decode()
    )
    assert families["jobs_total"].type == COUNTER
    assert families["build_info"].type == GAUGE
    assert families["mystery"].type == UNTYPED
    assert families["mystery"].metric[0].timestamp_ms == 1700000000250
    exemplar = families["with_exemplar_total"].metric[0].counter.exemplar
    assert {pair.name: pair.value for pair in exemplar.label} == {"trace_id": "abc"}


@pytest.mark.parametrize(("accept", "expected"), [
    (PROMETHEUS_2_42_ACCEPT, True),
    # Prometheus 3.x: PrometheusProto first among its scrape_protocols.
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=delimited;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,"
     "text/plain;version=0.0.4;q=0.2,*/*;q=0.1", True),
    # Prometheus without native histograms.
    ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", False),
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=delimited;q=0.2,text/plain;q=0.5", False),
    # The text encoding of the same messages, which we do not serve.
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=text", False),
    ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
     "encoding=delimited;q=0", False),
    ("*/*", False),
    (None, False),
])
def test_negotiation(accept: str | None, expected: bool) -> None:
    assert wants_protobuf(accept) is expected


def test_a_protobuf_scrape_is_answered_with_its_content_type() -> None:
    parts = traffic_parts()
    request = parts.exposition.prepare("GET", PROMETHEUS_2_42_ACCEPT, None)
    assert request == ScrapeRequest(False, False, protobuf=True)
    status, headers, body = parts.exposition.respond("GET", PROMETHEUS_2_42_ACCEPT, "gzip")
    assert status == 200
    assert dict(headers)["Content-Type"] == PROTOBUF_CONTENT_TYPE
    assert dict(headers)["Content-Encoding"] == "gzip"
    assert by_name(gzip.decompress(body))["http_requests_total"].metric


@pytest.mark.anyio
async def test_the_asgi_endpoint_serves_protobuf_to_prometheus() -> None:
    from tests.support.apps.starlette_traffic import app_with_traffic_routes, traffic
    from tests.support.asgi import client, wrap

    app = wrap(app_with_traffic_routes())
    await traffic(app)
    async with client(app) as http:
        response = await http.get("/metrics", headers={"Accept": PROMETHEUS_2_42_ACCEPT})
        text = await http.get("/metrics")
    assert response.headers["content-type"] == PROTOBUF_CONTENT_TYPE
    # The library's own scrape counts and render times change from one scrape to the next.
    def steady(found: list[Any]) -> list[Any]:
        return [sample for sample in found if not sample[0].startswith("http_metrics_")]

    assert steady(classic_samples(parse_delimited(response.content))) == steady(
        text_samples(text.text)
    )
    assert by_name(response.content)["http_requests_total"].metric

"""Native histograms in a real Prometheus (Debian's 2.42 with
``--enable-feature=native-histograms``), scraping our protobuf exposition.

A small server on 127.0.0.1 renders a store snapshot through the library's protobuf
renderer; the snapshot grows by the same requests at every scrape (known durations, so
every rate and fraction is known). Prometheus 2.42 then keeps only the native form of a
histogram that carries both: no ``_bucket``, ``_count`` or ``_sum`` series (2.42 has no
setting to keep them; 2.45+ has ``scrape_classic_histograms``, 3.x
``always_scrape_classic_histograms``), which is why ``http-metrics rules --native`` reads
either form. The generated ``--native`` rules are evaluated there: traffic, quantiles,
availability and latency objectives, one of them at a threshold that is no bucket bound.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from asgi_metrics.core.naming import metric_names
from asgi_metrics.core.native import NativeSeries
from asgi_metrics.core.settings import Settings
from asgi_metrics.core.store import Snapshot
from asgi_metrics.exposition.negotiation import wants_protobuf
from asgi_metrics.exposition.protobuf import PROTOBUF_CONTENT_TYPE, ProtobufStoreRenderer
from asgi_metrics.slo.cli import main
from tests.support.prometheus_server import PrometheusServer

SCHEMA = 3
BOUNDS = (0.05, 0.25, 1.0)
#: Per scrape: (route, status) -> durations of the requests added.
TRAFFIC: dict[tuple[str, str], list[float]] = {
    ("/fast", "200"): [0.011] * 60 + [0.12] * 38 + [0.7] * 2,
    ("/slow", "200"): [0.4] * 90 + [1.3] * 5,
    ("/slow", "500"): [0.02] * 5,
}
OPTIONS = ["--native", "--buckets", ",".join(map(str, BOUNDS)), "--availability", "99.9",
           "--latency", "0.25:99", "--latency", "0.3:95"]


def native_index(value: float) -> int:
    """The native bucket of ``value``: bucket i covers (2**((i-1)/2**s), 2**(i/2**s)]."""
    return math.ceil(math.log2(value) * 2**SCHEMA)


def snapshot(scrape: int) -> Snapshot:
    requests: dict[Any, list[float]] = {}
    native: dict[Any, NativeSeries] = {}
    for (route, status), durations in TRAFFIC.items():
        key = ("GET", route, status)
        series = [0.0] * (len(BOUNDS) + 2)
        state = NativeSeries(SCHEMA, 2.0**-128, 0, 0, 0.0, {})
        for duration in durations:
            series[0] += duration * scrape
            series[1 + sum(bound < duration for bound in BOUNDS)] += scrape
            index = native_index(duration)
            state.positive[index] = state.positive.get(index, 0) + scrape
            state.count += scrape
            state.sum += duration * scrape
        requests[key] = series
        native[key] = state
    return Snapshot(requests=requests, native={"requests": native})


class ProtobufApp:
    """Serves the growing snapshot in the protobuf format to scrapers asking for it."""

    def __init__(self) -> None:
        names = metric_names(Settings.build({"buckets": list(BOUNDS)}, environ={}))
        renderer = ProtobufStoreRenderer(names, {}, BOUNDS, (100.0,))
        self.scrapes = 0
        self.accepts: list[str] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                accept = self.headers.get("Accept", "")
                app.accepts.append(accept)
                assert wants_protobuf(accept), accept
                app.scrapes += 1
                body = renderer.render(snapshot(app.scrapes))
                self.send_response(200)
                self.send_header("Content-Type", PROTOBUF_CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ProtobufApp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    rules = tmp_path_factory.mktemp("native") / "rules.yml"
    assert main(["rules", *OPTIONS, "-o", str(rules)]) == 0
    with ProtobufApp() as app, PrometheusServer(
        [f"127.0.0.1:{app.port}"], scrape_interval="1s", evaluation_interval="1s",
        rule_files=[rules], extra_flags=["--enable-feature=native-histograms"],
    ) as server:
        server.wait_for_scrapes(4, timeout=30)
        server.wait_for(
            lambda: len(server.query("slo:http_request_errors:ratio_rate5m")) == 3,
            timeout=15, message="the objectives' ratios",
        )
        yield server


def value(server: PrometheusServer, query: str) -> float:
    result = server.query(query)
    assert len(result) == 1, (query, result)
    return float(result[0]["value"][1])


def test_prometheus_keeps_only_the_native_form(prometheus: PrometheusServer) -> None:
    for classic in ("_bucket", "_count", "_sum"):
        assert prometheus.query(f"http_request_duration_seconds{classic}") == []
    histograms = prometheus.query("http_request_duration_seconds")
    assert len(histograms) == 3 and all("histogram" in s for s in histograms)
    # The request counter is no histogram: kept.
    assert len(prometheus.query("http_requests_total")) == 3


def test_histogram_count_equals_the_request_counter(prometheus: PrometheusServer) -> None:
    for route, status in TRAFFIC:
        selector = f'{{route="{route}", status="{status}"}}'
        count = value(prometheus, f"histogram_count(http_request_duration_seconds{selector})")
        total = value(prometheus, f"http_requests_total{selector}")
        assert count == total > 0
        total_sum = value(prometheus, f"histogram_sum(http_request_duration_seconds{selector})")
        assert total_sum == pytest.approx(total / len(TRAFFIC[(route, status)])
                                          * sum(TRAFFIC[(route, status)]))


def test_the_native_rules_record_what_the_traffic_implies(
    prometheus: PrometheusServer,
) -> None:
    ratios = {
        s["metric"]["slo"]: float(s["value"][1])
        for s in prometheus.query("slo:http_request_errors:ratio_rate5m")
    }
    total = sum(len(durations) for durations in TRAFFIC.values())
    assert ratios["availability"] == pytest.approx(5 / total)
    # 0.25 s is a bucket boundary of every schema >= 0: the native fraction is exact.
    slower = sum(d > 0.25 for durations in TRAFFIC.values() for d in durations)
    assert ratios["latency-0.25s"] == pytest.approx(slower / total)
    # 0.3 s is no bucket bound: interpolated inside the native bucket holding 0.3 s,
    # between the shares slower than that bucket's two ends.
    index = native_index(0.3)
    lower, upper = 2 ** ((index - 1) / 2**SCHEMA), 2 ** (index / 2**SCHEMA)
    durations = [d for ds in TRAFFIC.values() for d in ds]
    assert (sum(d > upper for d in durations) / total - 1e-9 <= ratios["latency-0.3s"]
            <= sum(d > lower for d in durations) / total + 1e-9)
    # The quantile rules read the native histogram: /fast's p50 lies in 0.011's bucket.
    p50 = {
        s["metric"]["route"]: float(s["value"][1])
        for s in prometheus.query("route:http_request_duration_seconds:p50_5m")
    }
    index = native_index(0.011)
    assert 2 ** ((index - 1) / 2**SCHEMA) <= p50["/fast"] <= 2 ** (index / 2**SCHEMA)
    traffic = {
        s["metric"]["route"]: float(s["value"][1])
        for s in prometheus.query("route:http_requests:rate5m")
    }
    assert set(traffic) == {"/fast", "/slow"}


def test_the_fast_burn_pages_for_availability(prometheus: PrometheusServer) -> None:
    # 5 of 200 requests fail: 2.5%, 25x a 0.1% budget: page.
    def paging() -> bool:
        return any(
            a["labels"]["alertname"] == "HTTPErrorBudgetBurnFast"
            and a["labels"]["slo"] == "availability" and a["state"] == "firing"
            for a in prometheus.alerts()
        )

    prometheus.wait_for(paging, timeout=15, message="the availability page")


def test_classic_rules_see_nothing_there(tmp_path: Path, prometheus: PrometheusServer) -> None:
    # What the issue saw: without --native, the latency ratio reads _bucket, absent here.
    rules = tmp_path / "classic.yml"
    classic = ["--buckets", ",".join(map(str, BOUNDS)), "--latency", "0.25:99"]
    assert main(["rules", *classic, "-o", str(rules)]) == 0
    assert "http_request_duration_seconds_bucket" in rules.read_text(encoding="utf-8")
    assert prometheus.query(
        'sum by (job) (rate(http_request_duration_seconds_bucket{le="0.25"}[5m]))'
    ) == []

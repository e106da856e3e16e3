"""End to end: real uvicorn, real Prometheus with exemplar storage, scraping OpenMetrics."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
import uvicorn

from tests.support.prometheus_server import PrometheusServer
from tests.support.servers import free_port


@pytest.fixture
def example_server() -> Iterator[str]:
    from example_apps.otel_app.app import app

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive()


def exemplar_trace_ids(prometheus: PrometheusServer, query: str) -> set[str]:
    now = time.time()
    data = prometheus.api(
        "query_exemplars", {"query": query, "start": repr(now - 600), "end": repr(now + 5)}
    )
    return {
        exemplar["labels"].get("trace_id", "")
        for series in data or []
        for exemplar in series.get("exemplars", [])
    }


def test_prometheus_stores_the_trace_ids_as_exemplars(example_server: str) -> None:
    buckets = 'http_request_duration_seconds_bucket{route="/orders/{order_id}"}'
    counter = 'http_requests_total{route="/orders/{order_id}"}'
    trace_ids = [f"{index:02x}" * 16 for index in range(0xA1, 0xA4)]
    with PrometheusServer(
        [example_server], scrape_interval="1s", extra_flags=["--enable-feature=exemplar-storage"]
    ) as prometheus:
        prometheus.wait_for_scrapes(1, timeout=30)
        for trace_id in trace_ids:
            request = urllib.request.Request(
                f"http://{example_server}/orders/7",
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200
                # No incoming X-Request-ID: the trace ID became the correlation ID.
                assert response.headers["X-Request-ID"] == trace_id
            # Each bucket shows its latest exemplar; wait until Prometheus has stored this
            # one before the next request replaces it.
            prometheus.wait_for(
                lambda trace_id=trace_id: trace_id in exemplar_trace_ids(prometheus, buckets),
                timeout=15, message=f"exemplar {trace_id}",
            )
        assert set(trace_ids) <= exemplar_trace_ids(prometheus, buckets)
        assert set(trace_ids) <= exemplar_trace_ids(prometheus, counter)

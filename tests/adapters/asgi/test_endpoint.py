"""The /metrics endpoint: methods, negotiation, compression, off-loop rendering, registries."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from asgi_metrics import MetricsMiddleware, metrics_app
from asgi_metrics.exposition.collector import iter_registered
from tests.support.apps.starlette_traffic import (
    app_with_traffic_routes,
    hello,
    not_metrics,
    traffic,
)
from tests.support.asgi import client, drive, get_all, http_scope, scrape, scrape_text, wrap
from tests.support.scrape import (
    DURATION,
    EXCEPTIONS,
    REQUEST,
    parse_families,
    request_count,
    sample,
    samples,
)

pytestmark = pytest.mark.anyio

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


async def test_get_serves_prometheus_text_with_exact_values() -> None:
    app = wrap(app_with_traffic_routes())
    await traffic(app)
    async with client(app) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse_families(response.text)
    assert request_count(families, "/users/{user_id}") == 3
    assert request_count(families, "/users/{user_id}", "POST") == 1
    assert request_count(families, "/users/{user_id}", "_OTHER", "405") == 1
    assert request_count(families, "__unmatched__", status="404") == 1
    assert request_count(families, "/fail", status="500") == 1
    assert sample(families, EXCEPTIONS, {"method": "GET", "route": "/fail",
                                         "exception_type": "RuntimeError"}) == 1
    assert sum(value for _, value in samples(families, REQUEST)) == 7
    # Histogram consistency per series: cumulative buckets, +Inf == _count == requests.
    for labels, total in samples(families, REQUEST):
        buckets = sorted(
            (float(bucket_labels["le"]), value)
            for bucket_labels, value in samples(families, f"{DURATION}_bucket")
            if {k: v for k, v in bucket_labels.items() if k != "le"} == labels
        )
        counts = [value for _, value in buckets]
        assert counts == sorted(counts)
        assert buckets[-1] == (float("inf"), total)
        assert sample(families, f"{DURATION}_count", labels) == total
        duration = sample(families, f"{DURATION}_sum", labels)
        assert 0 <= duration < 5 * total
        # The sum can only be below the smallest bound if every request was that fast.
        assert duration <= total * next(le for le, v in buckets if v == total)


async def test_head_has_no_body_and_the_same_headers() -> None:
    app = wrap(app_with_traffic_routes())
    await traffic(app)
    get = await drive(app, http_scope("/metrics"))
    head = await drive(app, http_scope("/metrics", method="HEAD"))
    # Every scrape renders afresh, and the library's own scrape counts and render times
    # differ from one to the next: the same headers, a length within a few digits.
    head_headers, get_headers = dict(head[0]["headers"]), dict(get[0]["headers"])
    assert head_headers.keys() == get_headers.keys()
    assert {k: v for k, v in head_headers.items() if k != b"content-length"} == {
        k: v for k, v in get_headers.items() if k != b"content-length"
    }
    assert abs(int(head_headers[b"content-length"]) - int(get_headers[b"content-length"])) < 64
    assert head[0]["status"] == 200
    assert head[1] == {"type": "http.response.body", "body": b""}
    length = dict(get[0]["headers"])[b"content-length"]
    assert int(length) == len(get[1]["body"]) > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "BREW"])
async def test_other_methods_get_405(method: str) -> None:
    app = wrap(app_with_traffic_routes())
    messages = await drive(app, http_scope("/metrics", method=method))
    assert messages[0]["status"] == 405
    assert dict(messages[0]["headers"])[b"allow"] == b"GET, HEAD"
    assert samples(await scrape(app), REQUEST) == []


async def test_metrics_with_a_trailing_slash_goes_to_the_app() -> None:
    app = wrap(app_with_traffic_routes())
    async with client(app) as http:
        response = await http.get("/metrics/")
    assert response.text == "the app's own page"
    families = await scrape(app)
    assert request_count(families, "/metrics/") == 1
    assert sum(value for _, value in samples(families, REQUEST)) == 1


async def test_scrapes_are_not_counted() -> None:
    app = wrap(app_with_traffic_routes())
    for _ in range(3):
        await scrape(app)
    families = await scrape(app)
    assert samples(families, REQUEST) == []
    assert sum(value for _, value in samples(families, "http_requests_in_flight")) == 0


async def test_metrics_path_none_turns_the_endpoint_off() -> None:
    inner = Starlette(routes=[Route("/metrics", not_metrics)])
    app = wrap(inner, metrics_path=None)
    async with client(app) as http:
        response = await http.get("/metrics")
        assert response.text == "the app's own page"
    assert request_count(parse_families(app.exposition.render(False).decode()), "/metrics") == 1


async def test_custom_metrics_path() -> None:
    app = wrap(app_with_traffic_routes(), metrics_path="/internal/prom")
    # The app has "/metrics/", so "/metrics" is now its slash redirect.
    assert await get_all(app, ["/metrics", "/users/1"]) == [307, 200]
    families = await scrape(app, "/internal/prom")
    assert request_count(families, "__unmatched__", status="307") == 1
    assert request_count(families, "/users/{user_id}") == 1


async def test_openmetrics_when_asked_for() -> None:
    app = wrap(app_with_traffic_routes())
    await traffic(app)
    messages = await drive(app, http_scope("/metrics", headers=[(b"accept", OPENMETRICS.encode())]))
    headers = dict(messages[0]["headers"])
    assert headers[b"content-type"] == b"application/openmetrics-text; version=1.0.0; charset=utf-8"
    text = messages[1]["body"].decode()
    assert text.endswith("# EOF\n")
    assert text.count("# EOF") == 1
    families = {family.name: family for family in parse_openmetrics(text)}
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    key = (REQUEST, (("method", "GET"), ("route", "/users/{user_id}"), ("status", "200")))
    assert values[key] == 3
    assert families["http_requests"].type == "counter"
    assert families["http_request_duration_seconds"].type == "histogram"


def _without_own(text: str) -> str:
    return "".join(line for line in text.splitlines(True) if "http_metrics_" not in line)


async def test_gzip_when_accepted() -> None:
    app = wrap(app_with_traffic_routes())
    await traffic(app)
    plain = await drive(app, http_scope("/metrics"))
    zipped = await drive(app, http_scope("/metrics", headers=[(b"accept-encoding", b"gzip")]))
    headers = dict(zipped[0]["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert b"accept-encoding" in headers[b"vary"].lower()
    body = zipped[1]["body"]
    assert int(headers[b"content-length"]) == len(body)
    text = gzip.decompress(body).decode()
    # The same metrics, but for the library's own scrape counts and render times.
    assert _without_own(text) == _without_own(plain[1]["body"].decode())
    assert request_count(parse_families(text), "/users/{user_id}") == 3
    om = await drive(app, http_scope("/metrics", headers=[
        (b"accept-encoding", b"br, gzip;q=0.5"), (b"accept", OPENMETRICS.encode())]))
    assert gzip.decompress(om[1]["body"]).decode().endswith("# EOF\n")
    refused = await drive(app, http_scope("/metrics", headers=[(b"accept-encoding", b"gzip;q=0")]))
    assert b"content-encoding" not in dict(refused[0]["headers"])


class SlowCollector(Collector):
    def __init__(self) -> None:
        self.entered = threading.Event()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.entered.set()
        time.sleep(0.5)
        yield GaugeMetricFamily("slow_thing", "A collector that takes its time.", value=1)


async def test_rendering_does_not_block_the_event_loop() -> None:
    registry = CollectorRegistry()
    app = wrap(app_with_traffic_routes(), registry=registry)
    slow = SlowCollector()
    registry.register(slow)
    slow.entered.clear()  # registering may have collected once
    async with client(app) as http:
        await http.get("/users/1")
        scraping = asyncio.ensure_future(http.get("/metrics"))
        while not slow.entered.is_set():
            await asyncio.sleep(0.005)
        started = time.perf_counter()
        response = await http.get("/users/1")
        quick = time.perf_counter() - started
        assert response.status_code == 200
        assert not scraping.done()
        scraped = await scraping
    assert quick < 0.3
    families = parse_families(scraped.text)
    assert sample(families, "slow_thing") == 1
    # Other collectors of the registry are shown alongside ours.
    assert request_count(families, "/users/{user_id}") == 1
    assert request_count(await scrape(app), "/users/{user_id}") == 2


async def test_standalone_metrics_app_mounted_elsewhere() -> None:
    registry = CollectorRegistry()
    Counter("jobs_done", "Jobs done.", registry=registry).inc(2)
    inner = Starlette(
        routes=[Route("/users/{user_id}", hello),
                Mount("/internal/metrics", app=metrics_app(registry))]
    )
    app = wrap(inner, registry=registry, metrics_path=None,
               exclude_patterns=[r"/internal/metrics.*"])
    assert await get_all(app, ["/users/1", "/users/2", "/metrics"]) == [200, 200, 404]
    text = await scrape_text(app, "/internal/metrics/")
    families = parse_families(text)
    assert request_count(families, "/users/{user_id}") == 2
    assert request_count(families, "__unmatched__", status="404") == 1
    assert sample(families, "jobs_done_total") == 2
    assert text.count("# TYPE http_requests_total counter") == 1
    async with client(app) as http:
        response = await http.get(
            "/internal/metrics/", headers={"accept": OPENMETRICS, "accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.text.endswith("# EOF\n")


@pytest.fixture
def default_registry_cleanup() -> Iterator[None]:
    before = set(iter_registered(REGISTRY))
    yield
    for collector in set(iter_registered(REGISTRY)) - before:
        REGISTRY.unregister(collector)


@pytest.mark.usefixtures("default_registry_cleanup")
async def test_two_apps_in_one_process_with_the_default_registry() -> None:
    def build() -> FastAPI:
        api = FastAPI()

        @api.get("/ping")
        def ping() -> str:
            return "pong"

        return api

    first = build()
    first.add_middleware(MetricsMiddleware)
    second = build()
    second.add_middleware(MetricsMiddleware)
    third = MetricsMiddleware(build())
    # Middleware stacks are built lazily on the first request; that is where a
    # "Duplicated timeseries" error would appear.
    assert await get_all(first, ["/ping"] * 2) == [200, 200]
    assert await get_all(second, ["/ping"] * 3) == [200, 200, 200]
    assert await get_all(third, ["/ping"] * 5) == [200] * 5
    assert request_count(await scrape(first), "/ping") == 2
    assert request_count(await scrape(second), "/ping") == 3
    assert request_count(await scrape(third), "/ping") == 5
    text = await scrape_text(second)
    assert text.count("# TYPE http_requests_total counter") == 1
    assert "process_" in text or "python_" in text  # the default registry's own collectors


async def test_metrics_path_and_exclusions_are_relative_to_root_path() -> None:
    # uvicorn --root-path /proxy turns a request for /metrics into path "/proxy/metrics".
    app = wrap(app_with_traffic_routes(), exclude_paths=["/users/1"],
               exclude_patterns=[r"/users/9\d*"])
    for path in ("/proxy/users/1", "/proxy/users/2", "/proxy/users/99"):
        assert (await drive(app, http_scope(path, root_path="/proxy")))[0]["status"] == 200
    messages = await drive(app, http_scope("/proxy/metrics", root_path="/proxy"))
    assert messages[0]["status"] == 200
    families = parse_families(messages[1]["body"].decode())
    assert samples(families, REQUEST) == [
        ({"method": "GET", "route": "/users/{user_id}", "status": "200"}, 1.0)
    ]

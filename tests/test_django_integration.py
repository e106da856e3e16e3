"""Django through django.test.Client (WSGI-style handler) and AsyncClient (ASGI handler),
with the example project's settings and URLs."""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "example_apps" / "django_app"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

import django

django.setup()

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from tests.wsgi_support import Samples, exceptions, in_flight, parse, requests  # noqa: E402
from wsgi_metrics import ConfigurationError  # noqa: E402
from wsgi_metrics.django import MetricsMiddleware  # noqa: E402

MIDDLEWARE = ["wsgi_metrics.django.MetricsMiddleware", "django.middleware.common.CommonMiddleware"]


@pytest.fixture(autouse=True)
def fresh_store() -> Iterator[None]:
    # New settings build a new store: each test starts from zero.
    with override_settings(
        HTTP_METRICS={"registry": CollectorRegistry(), "exclude_paths": ["/healthz"]}
    ):
        yield


def scrape(client: Client | None = None) -> Samples:
    response = (client or Client()).get("/metrics")
    assert response.status_code == 200
    return parse(response.content.decode())


def fetch(path: str, method: str = "GET", client: Client | None = None) -> int:
    client = client or Client(raise_request_exception=False)
    response = client.generic(method, path)
    if response.streaming:
        b"".join(response.streaming_content)
    return int(response.status_code)


def test_route_templates_across_include_and_re_path() -> None:
    for path in ["/", "/api/items/", "/api/items/7/", "/api/items/8/", "/api/archive/2024/"]:
        assert fetch(path) == 200
    samples = scrape()
    assert requests(samples) == {
        ("GET", "/", "200"): 1,
        ("GET", "/api/items/", "200"): 1,
        ("GET", "/api/items/<int:pk>/", "200"): 2,
        ("GET", "/api/archive/(?P<year>[0-9]{4})/", "200"): 1,
    }
    assert in_flight(samples) == 0


def test_http404_and_permission_denied_count_by_status() -> None:
    assert fetch("/api/items/500/") == 404
    assert fetch("/api/private/") == 403
    assert fetch("/no/such/page/") == 404
    assert fetch("/api/items") == 301  # APPEND_SLASH: nothing matched
    samples = scrape()
    assert requests(samples) == {
        ("GET", "/api/items/<int:pk>/", "404"): 1,
        ("GET", "/api/private/", "403"): 1,
        ("GET", "__unmatched__", "404"): 1,
        ("GET", "__unmatched__", "301"): 1,
    }
    assert exceptions(samples) == {}


def test_unhandled_exception_is_500_and_counted_once() -> None:
    assert fetch("/api/boom/") == 500
    with pytest.raises(RuntimeError):  # the test client re-raises it after the 500
        Client().get("/api/boom/")
    samples = scrape()
    assert requests(samples) == {("GET", "/api/boom/", "500"): 2}
    assert exceptions(samples) == {("GET", "/api/boom/", "RuntimeError"): 2}
    assert in_flight(samples) == 0


@override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True)
def test_propagated_exception_reraised_and_counted_once() -> None:
    with pytest.raises(RuntimeError, match="example failure"):
        Client(raise_request_exception=False).get("/api/boom/")
    samples = scrape()
    assert requests(samples) == {("GET", "/api/boom/", "500"): 1}
    assert exceptions(samples) == {("GET", "/api/boom/", "RuntimeError"): 1}
    assert in_flight(samples) == 0


@override_settings(MIDDLEWARE=[*MIDDLEWARE, "tests.django_extras.RaisingMiddleware"])
def test_exception_from_a_later_middleware_is_counted() -> None:
    assert fetch("/api/items/") == 500
    samples = scrape()
    assert requests(samples) == {("GET", "__unmatched__", "500"): 1}
    assert exceptions(samples) == {("GET", "__unmatched__", "LookupError"): 1}


def test_streaming_response_recorded_when_closed() -> None:
    response = Client().get("/api/stream/")
    assert requests(scrape()) == {}  # not consumed: still being served
    assert in_flight(scrape()) == 1
    assert b"".join(response.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"
    samples = scrape()
    assert requests(samples) == {("GET", "/api/stream/", "200"): 1}
    assert in_flight(samples) == 0


STREAMS = pytest.mark.parametrize("path", ["/stream/", "/file/"])


@pytest.fixture
def stream_urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF="tests.django_stream_urls"):
        yield


@STREAMS
@pytest.mark.usefixtures("stream_urls")
def test_streaming_response_never_read_is_recorded_when_collected(path: str) -> None:
    response = Client().get(path)
    assert response.streaming
    assert in_flight(scrape()) == 1  # not read: still being served
    del response  # dropped unread: nothing calls close()
    gc.collect()
    samples = scrape()
    assert requests(samples) == {("GET", path, "200"): 1}
    assert in_flight(samples) == 0


@STREAMS
@pytest.mark.usefixtures("stream_urls")
def test_streaming_response_never_read_is_recorded_when_collected_async(path: str) -> None:
    async def get() -> Any:
        return await AsyncClient().get(path)

    response = asyncio.run(get())
    assert response.streaming
    del response
    # asgiref's worker thread may still hold the view's result (the response) for a
    # moment after handing it over: collect until it lets go (bounded).
    deadline = time.monotonic() + 5
    for _ in range(500):
        gc.collect()
        samples = scrape()
        if in_flight(samples) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert requests(samples) == {("GET", path, "200"): 1}
    assert in_flight(samples) == 0


@STREAMS
@pytest.mark.usefixtures("stream_urls")
def test_consumed_streaming_response_is_recorded_once(path: str) -> None:
    response = Client().get(path)
    assert b"".join(response.streaming_content) == b"0123456789"  # the client closes it
    expected = {("GET", path, "200"): 1}
    assert requests(scrape()) == expected
    response.close()  # closed again, then collected: still once
    del response
    gc.collect()
    samples = scrape()
    assert requests(samples) == expected
    assert in_flight(samples) == 0


def test_excluded_paths_and_scrapes_are_not_counted() -> None:
    assert fetch("/healthz") == 200
    scrape()
    assert requests(scrape()) == {}


def test_metrics_endpoint_negotiation_gzip_head_and_methods() -> None:
    fetch("/api/items/")
    client = Client()
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text")
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")
    response = client.get("/metrics", HTTP_ACCEPT_ENCODING="gzip")
    assert response["Content-Encoding"] == "gzip"
    assert b'route="/api/items/"' in gzip.decompress(response.content)
    response = client.head("/metrics")
    assert response.content == b"" and int(response["Content-Length"]) > 0
    assert client.post("/metrics").status_code == 405


def test_hostile_method_and_path_add_no_series() -> None:
    assert fetch("/api/items/", "FOO") == 200  # Django serves it; the label is _OTHER
    assert fetch("/api/items/%FF/") == 404
    assert fetch("/caf%C3%A9/") == 404
    assert requests(scrape()) == {
        ("_OTHER", "/api/items/", "200"): 1,
        ("GET", "__unmatched__", "404"): 2,
    }


def test_one_store_per_process_across_handlers() -> None:
    fetch("/", client=Client())
    fetch("/", client=Client())  # another handler, another middleware instance
    assert requests(scrape(Client())) == {("GET", "/", "200"): 2}


def test_bad_settings_raise_naming_the_setting() -> None:
    with (
        override_settings(HTTP_METRICS={"buckets": "fast"}),
        pytest.raises(ConfigurationError, match="buckets"),
    ):
        Client().get("/")
    with (
        override_settings(HTTP_METRICS=["a", "list"]),
        pytest.raises(ConfigurationError, match="HTTP_METRICS"),
    ):
        Client().get("/")


def test_async_handler_calls_the_middleware_natively() -> None:
    # Django adapts a middleware (runs it through a thread) unless it is marked as a
    # coroutine function; check what the ASGI handler actually built.
    chain: Any = ASGIHandler()._middleware_chain
    middleware = chain.__wrapped__
    assert isinstance(middleware, MetricsMiddleware)
    assert iscoroutinefunction(chain) and iscoroutinefunction(middleware)
    assert iscoroutinefunction(middleware.get_response)

    handler = WSGIHandler()
    sync_middleware = handler._middleware_chain.__wrapped__
    assert isinstance(sync_middleware, MetricsMiddleware)
    assert not iscoroutinefunction(sync_middleware)


def test_async_client_counts_like_the_sync_one() -> None:
    async def traffic() -> tuple[list[int], bytes]:
        client = AsyncClient(raise_request_exception=False)
        statuses = []
        for path in ["/api/items/3/", "/api/items/300/", "/api/async/", "/api/private/",
                     "/api/boom/", "/nope/"]:
            statuses.append((await client.get(path)).status_code)
        streamed = await client.get("/api/stream/")
        body = b"".join(streamed.streaming_content)  # a sync iterator: Django keeps it
        return statuses, body

    statuses, body = asyncio.run(traffic())
    assert statuses == [200, 404, 200, 403, 500, 404]
    assert body == b"chunk 0\nchunk 1\nchunk 2\n"

    async def metrics() -> bytes:
        response = await AsyncClient().get("/metrics")
        return bytes(response.content)

    samples = parse(asyncio.run(metrics()).decode())
    assert requests(samples) == {
        ("GET", "/api/items/<int:pk>/", "200"): 1,
        ("GET", "/api/items/<int:pk>/", "404"): 1,
        ("GET", "/api/async/", "200"): 1,
        ("GET", "/api/private/", "403"): 1,
        ("GET", "/api/boom/", "500"): 1,
        ("GET", "__unmatched__", "404"): 1,
        ("GET", "/api/stream/", "200"): 1,
    }
    assert exceptions(samples) == {("GET", "/api/boom/", "RuntimeError"): 1}
    assert in_flight(samples) == 0

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
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "example_apps" / "django_app"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

import django

django.setup()

from asgiref.sync import iscoroutinefunction  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.test import AsyncClient, Client, RequestFactory, override_settings  # noqa: E402
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest  # noqa: E402

from asgi_metrics.exposition.collector import iter_registered  # noqa: E402
from tests.support.scrape import (  # noqa: E402
    Samples,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
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
    return parse_samples(response.content.decode())


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
    assert requests_by_labels(samples) == {
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
    assert requests_by_labels(samples) == {
        ("GET", "/api/items/<int:pk>/", "404"): 1,
        ("GET", "/api/private/", "403"): 1,
        ("GET", "__unmatched__", "404"): 1,
        ("GET", "__unmatched__", "301"): 1,
    }
    assert exceptions_by_labels(samples) == {}


def test_unhandled_exception_is_500_and_counted_once() -> None:
    assert fetch("/api/boom/") == 500
    with pytest.raises(RuntimeError):  # the test client re-raises it after the 500
        Client().get("/api/boom/")
    samples = scrape()
    assert requests_by_labels(samples) == {("GET", "/api/boom/", "500"): 2}
    assert exceptions_by_labels(samples) == {("GET", "/api/boom/", "RuntimeError"): 2}
    assert in_flight(samples) == 0


@override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True)
def test_propagated_exception_reraised_and_counted_once() -> None:
    with pytest.raises(RuntimeError, match="example failure"):
        Client(raise_request_exception=False).get("/api/boom/")
    samples = scrape()
    assert requests_by_labels(samples) == {("GET", "/api/boom/", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/api/boom/", "RuntimeError"): 1}
    assert in_flight(samples) == 0


@override_settings(
    MIDDLEWARE=[*MIDDLEWARE, "tests.support.apps.django_middleware.RaisingMiddleware"]
)
def test_exception_from_a_later_middleware_is_counted() -> None:
    assert fetch("/api/items/") == 500
    samples = scrape()
    assert requests_by_labels(samples) == {("GET", "__unmatched__", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "__unmatched__", "LookupError"): 1}


def test_streaming_response_recorded_when_closed() -> None:
    response = Client().get("/api/stream/")
    assert requests_by_labels(scrape()) == {}  # not consumed: still being served
    assert in_flight(scrape()) == 1
    assert b"".join(response.streaming_content) == b"chunk 0\nchunk 1\nchunk 2\n"
    samples = scrape()
    assert requests_by_labels(samples) == {("GET", "/api/stream/", "200"): 1}
    assert in_flight(samples) == 0


STREAMS = pytest.mark.parametrize("path", ["/stream/", "/file/"])


@pytest.fixture
def stream_urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF="tests.support.apps.django_stream_urls"):
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
    assert requests_by_labels(samples) == {("GET", path, "200"): 1}
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
    assert requests_by_labels(samples) == {("GET", path, "200"): 1}
    assert in_flight(samples) == 0


@STREAMS
@pytest.mark.usefixtures("stream_urls")
def test_consumed_streaming_response_is_recorded_once(path: str) -> None:
    response = Client().get(path)
    assert b"".join(response.streaming_content) == b"0123456789"  # the client closes it
    expected = {("GET", path, "200"): 1}
    assert requests_by_labels(scrape()) == expected
    response.close()  # closed again, then collected: still once
    del response
    gc.collect()
    samples = scrape()
    assert requests_by_labels(samples) == expected
    assert in_flight(samples) == 0


def test_excluded_paths_and_scrapes_are_not_counted() -> None:
    assert fetch("/healthz") == 200
    scrape()
    assert requests_by_labels(scrape()) == {}


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
    assert requests_by_labels(scrape()) == {
        ("_OTHER", "/api/items/", "200"): 1,
        ("GET", "__unmatched__", "404"): 2,
    }


def test_one_store_per_process_across_handlers() -> None:
    fetch("/", client=Client())
    fetch("/", client=Client())  # another handler, another middleware instance
    assert requests_by_labels(scrape(Client())) == {("GET", "/", "200"): 2}


def test_changed_settings_on_the_default_registry_replace_the_store() -> None:
    # recorder() builds a new store when the settings change (override_settings, a second
    # Django project in one process); with other options than the first it used to raise
    # "Duplicated timeseries" in the default registry.
    before = set(iter_registered(REGISTRY))
    try:
        with override_settings(HTTP_METRICS={}):
            assert fetch("/") == 200
        with override_settings(HTTP_METRICS={"request_size": True, "buckets": [0.5, 5]}):
            assert fetch("/") == 200
            assert fetch("/") == 200
            samples = parse_samples(generate_latest(REGISTRY).decode())
    finally:
        for collector in set(iter_registered(REGISTRY)) - before:
            REGISTRY.unregister(collector)
    labels = frozenset({"method": "GET", "route": "/", "status": "200"}.items())
    assert requests_by_labels(samples) == {("GET", "/", "200"): 2}
    assert samples[("http_request_size_bytes_count", labels)] == 2
    assert samples[("http_request_duration_seconds_bucket", labels | {("le", "5.0")})] == 2


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

    samples = parse_samples(asyncio.run(metrics()).decode())
    assert requests_by_labels(samples) == {
        ("GET", "/api/items/<int:pk>/", "200"): 1,
        ("GET", "/api/items/<int:pk>/", "404"): 1,
        ("GET", "/api/async/", "200"): 1,
        ("GET", "/api/private/", "403"): 1,
        ("GET", "/api/boom/", "500"): 1,
        ("GET", "__unmatched__", "404"): 1,
        ("GET", "/api/stream/", "200"): 1,
    }
    assert exceptions_by_labels(samples) == {("GET", "/api/boom/", "RuntimeError"): 1}
    assert in_flight(samples) == 0


# request_size: the declared Content-Length, else what Django gave the app -----------------

BODY = b"ab\ncd\nefg"  # 9 bytes, three lines
BODY_VIEWS = ["body", "body-twice", "stream", "lines"]


def body_settings() -> Any:
    return override_settings(
        HTTP_METRICS={"registry": CollectorRegistry(), "request_size": True},
        ROOT_URLCONF="tests.support.apps.django_body_urls",
    )


def request_size(samples: Samples, route: str) -> tuple[float, float]:
    labels = frozenset({"method": "POST", "route": route, "status": "200"}.items())
    return (samples.get(("http_request_size_bytes_sum", labels), 0.0),
            samples.get(("http_request_size_bytes_count", labels), 0.0))


def test_request_size_is_the_declared_length_even_when_the_view_never_reads() -> None:
    with body_settings():
        client = Client()
        for view in ["ignore", *BODY_VIEWS]:
            response = client.post(f"/{view}", BODY, content_type="application/octet-stream")
            assert response.status_code == 200
        form = client.post("/form", "a=1&b=22", content_type="application/x-www-form-urlencoded")
        assert form.content == b"a=1,b=22"
        samples = scrape(client)
    for route in ["/ignore", "/body", "/stream", "/lines"]:
        assert request_size(samples, route) == (9, 1), route
    assert request_size(samples, "/form") == (8, 1)


def test_request_size_of_a_chunked_body_under_asgi_is_what_the_view_read() -> None:
    # Django's ASGI handler reads the whole body before the middleware chain; without a
    # Content-Length the size is what the view took of it (request.body's length when it
    # read that, the bytes streamed through request.read()/iteration otherwise), and 0 for
    # a view that never read it (the middleware does not read it in the view's place).
    async def chunks() -> Any:
        for chunk in (b"ab\nc", b"d\nef", b"g"):
            yield chunk

    async def traffic() -> tuple[list[tuple[int, bytes]], str]:
        transport = httpx.ASGITransport(app=ASGIHandler())
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            answers = []
            for view in [*BODY_VIEWS, "ignore"]:
                response = await http.post(f"/{view}", content=chunks())
                assert "content-length" not in response.request.headers
                answers.append((response.status_code, response.content))
            metrics = (await http.get("/metrics")).text
        return answers, metrics

    with body_settings():
        answers, metrics = asyncio.run(traffic())
    assert answers == [
        (200, BODY), (200, BODY + BODY), (200, BODY), (200, BODY),
        (200, b"never read the body"),
    ]
    samples = parse_samples(metrics)
    for route in ["/body", "/body-twice", "/stream", "/lines"]:
        assert request_size(samples, route) == (9, 1), route
    assert request_size(samples, "/ignore") == (0, 1)


def test_request_size_without_content_length_under_wsgi_is_what_django_gave() -> None:
    # Django's WSGI request reads at most CONTENT_LENGTH bytes (none without one), so a
    # chunked body never reaches the view: 0 is what it received.
    with body_settings():
        client = Client()
        for view in ["body", "stream"]:
            response = client.generic("POST", f"/{view}", BODY, CONTENT_LENGTH="")
            assert (response.status_code, response.content) == (200, b"")
        samples = scrape(client)
    assert request_size(samples, "/body") == (0, 1)
    assert request_size(samples, "/stream") == (0, 1)


def test_body_watchers_only_without_content_length_and_only_while_serving() -> None:
    during: list[bool] = []
    requests_seen: list[HttpRequest] = []

    def view(request: HttpRequest) -> HttpResponse:
        during.append("read" in vars(request) and "readline" in vars(request))
        requests_seen.append(request)
        return HttpResponse(request.body)

    with body_settings():
        middleware = MetricsMiddleware(view)
        chunked = RequestFactory().generic("POST", "/body", BODY, CONTENT_LENGTH="")
        assert middleware(chunked).status_code == 200
        declared = RequestFactory().post("/body", BODY, content_type="text/plain")
        assert middleware(declared).content == BODY
    assert during == [True, False]
    # Taken off once the request is recorded: the request is as Django made it.
    assert not any({"read", "readline"} & set(vars(request)) for request in requests_seen)

"""Correlation IDs, exemplars and OpenTelemetry metrics with Django: sync and async views,
through ``django.test.Client`` (the WSGI-style handler) and ``AsyncClient`` (ASGI)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.paths import ROOT

sys.path.insert(0, str(ROOT / "example_apps" / "django_app"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")

import django

django.setup()

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import AsyncClient, Client, override_settings  # noqa: E402
from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from tests.support.correlation import INVALID_IDS, captured_logs  # noqa: E402
from tests.support.otel import otel_http_points  # noqa: E402
from tests.support.scrape import (  # noqa: E402
    exceptions_by_labels,
    parse_samples,
    requests_by_labels,
)
from tests.support.wsgi import InProcessServer, environ  # noqa: E402
from wsgi_metrics import get_correlation_id  # noqa: E402

HEX32 = re.compile(r"[0-9a-f]{32}")


def configure(**options: Any) -> Any:
    options.setdefault("registry", CollectorRegistry())
    options.setdefault("correlation_id", True)
    return override_settings(
        HTTP_METRICS=options, ROOT_URLCONF="tests.support.apps.django_correlation_urls"
    )


@pytest.fixture(autouse=True)
def correlation_on() -> Iterator[None]:
    with configure():
        yield


class Fetched:
    def __init__(self, status: int, ids: list[str], body: bytes, after: str | None) -> None:
        self.status, self.ids, self.body = status, ids, body
        #: get_correlation_id() in the caller's context once the body was consumed and
        #: closed: the request is over, nothing may be left.
        self.after = after


def fetch(mode: str, path: str, headers: dict[str, str] | None = None) -> Fetched:
    """One request, body consumed (which closes a streaming response, as a server does):
    ``sync`` through ``Client``, ``async`` through ``AsyncClient``, ``wsgi`` through
    Django's WSGI handler called the way a WSGI server calls it."""
    if mode == "wsgi":
        server = InProcessServer()
        extra = {"HTTP_HOST": "testserver", "REMOTE_ADDR": "127.0.0.1"}
        for name, value in (headers or {}).items():
            extra["HTTP_" + name.upper().replace("-", "_")] = value
        body = server.call(WSGIHandler(), environ(path, **extra))
        ids = [v for k, v in server.headers if k.lower() == "x-request-id"]
        return Fetched(int((server.status or "0")[:3]), ids, body, get_correlation_id())
    if mode == "sync":
        response = Client(raise_request_exception=False).get(path, headers=headers)
        body = b"".join(response.streaming_content) if response.streaming else response.content
        return Fetched(response.status_code, ids_of(response), body, get_correlation_id())

    async def run() -> Fetched:
        response = await AsyncClient(raise_request_exception=False).get(path, headers=headers)
        if not response.streaming:
            body = response.content
        elif response.is_async:
            body = b"".join([part async for part in response.streaming_content])
        else:
            body = b"".join(response.streaming_content)
        # Read in the request's own task: asyncio.run() isolates the test's context anyway.
        return Fetched(response.status_code, ids_of(response), body, get_correlation_id())

    return asyncio.run(run())


def ids_of(response: Any) -> list[str]:
    return [v for k, v in response.items() if k.lower() == "x-request-id"]


def scrape() -> str:
    return Client().get("/metrics").content.decode()


MODES = pytest.mark.parametrize("mode", ["sync", "async", "wsgi"])


@MODES
@pytest.mark.parametrize("view", ["echo", "aecho"])
def test_valid_id_echoed_and_seen_by_view_and_logs(mode: str, view: str) -> None:
    with captured_logs() as records:
        got = fetch(mode, f"/{view}/1/", {"X-Request-ID": "dj-1"})
    assert (got.status, got.ids, got.body, got.after) == (200, ["dj-1"], b"dj-1", None)
    assert records.ids_of("handling") == ["dj-1"]


@MODES
@pytest.mark.parametrize("raw", [None, *INVALID_IDS.values()], ids=["missing", *INVALID_IDS])
def test_missing_and_invalid_ids_replaced_and_echoed(mode: str, raw: str | None) -> None:
    with captured_logs() as records:
        got = fetch(mode, "/echo/2/", None if raw is None else {"X-Request-ID": raw})
    [cid] = got.ids
    assert HEX32.fullmatch(cid) and got.body == cid.encode()
    assert records.ids_of("handling") == [cid]
    replaced = [r.getMessage() for r in records.records if r.name == "asgi_metrics.correlation"]
    if raw is None:
        assert replaced == []
    else:
        [line] = replaced
        assert cid in line and (not raw or raw not in line)


@pytest.mark.parametrize(
    ("mode", "view"),
    [
        ("sync", "stream"), ("async", "stream"), ("async", "astream"),
        ("wsgi", "stream"), ("wsgi", "astream"),
        # Not ("sync", "astream"): Client closes async content inside its own async_to_sync
        # loop, in a copied context, so the reset cannot reach the test's thread; a WSGI
        # server closes the response in its own thread (the "wsgi" case).
    ],
)
def test_streamed_content_sees_the_id_and_it_is_reset_at_close(mode: str, view: str) -> None:
    with captured_logs() as records, warnings.catch_warnings():
        # Django warns that async content is consumed synchronously under WSGI.
        warnings.simplefilter("ignore")
        got = fetch(mode, f"/{view}/", {"X-Request-ID": "st-1"})
    assert (got.status, got.ids, got.body) == (200, ["st-1"], b"a=st-1;b=st-1;")
    assert got.after is None
    assert records.ids_of("chunk a") == ["st-1"] and records.ids_of("chunk b") == ["st-1"]
    assert requests_by_labels(parse_samples(scrape())) == {("GET", f"/{view}/", "200"): 1}


@MODES
@pytest.mark.parametrize("view", ["boom", "aboom"])
def test_unhandled_exception_500_carries_the_header_and_djangos_log_the_id(
    mode: str, view: str
) -> None:
    with captured_logs() as records:
        got = fetch(mode, f"/{view}/", {"X-Request-ID": "err-1"})
    assert (got.status, got.ids, got.after) == (500, ["err-1"], None)
    # Django's "Internal Server Error: ..." line is written inside the chain: it has the ID.
    assert records.ids_of(f"Internal Server Error: /{view}/") == ["err-1"]
    samples = parse_samples(scrape())
    assert requests_by_labels(samples) == {("GET", f"/{view}/", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", f"/{view}/", "RuntimeError"): 1}
    assert "err-1" not in scrape()  # never a label


@MODES
def test_404_and_excluded_paths_carry_the_header(mode: str) -> None:
    with configure(exclude_paths=["/echo/3/"]):
        missing = fetch(mode, "/nowhere/", {"X-Request-ID": "nf-1"})
        excluded = fetch(mode, "/echo/3/", {"X-Request-ID": "ex-1"})
        assert (missing.status, missing.ids) == (404, ["nf-1"])
        assert (excluded.status, excluded.ids, excluded.body) == (200, ["ex-1"], b"ex-1")
        assert missing.after is None and excluded.after is None
        assert requests_by_labels(parse_samples(scrape())) == {("GET", "__unmatched__", "404"): 1}


@MODES
def test_trusted_proxies_and_off_by_default(mode: str) -> None:
    # Both test clients connect from 127.0.0.1.
    with configure(trusted_proxies=["10.0.0.0/8"]):
        got = fetch(mode, "/echo/4/", {"X-Request-ID": "proxy-1"})
        assert HEX32.fullmatch(got.ids[0])
    with configure(trusted_proxies=["127.0.0.1"]):
        assert fetch(mode, "/echo/4/", {"X-Request-ID": "proxy-1"}).ids == ["proxy-1"]
    with configure(correlation_id=False):
        got = fetch(mode, "/echo/4/", {"X-Request-ID": "x"})
        assert (got.ids, got.body) == ([], b"-")


@MODES
def test_exemplar_from_a_span_around_the_request(mode: str) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("around") as span:
        fetch(mode, "/echo/5/")
    context = span.get_span_context()
    text = Client().get("/metrics", headers={"Accept": "application/openmetrics-text"})
    line = next(x for x in text.content.decode().splitlines()
                if x.startswith("http_requests_total{") and "/echo/<int:n>/" in x)
    assert (f'# {{trace_id="{context.trace_id:032x}",span_id="{context.span_id:016x}"}}'
            in line)


@MODES
@pytest.mark.parametrize("path", ["/echo/5/", "/stream/", "/boom/", "/echo/3/"])
def test_correlation_id_attribute_on_the_span(mode: str, path: str) -> None:
    """Read once as the response passes back: plain, streaming, Django's 500, and an
    excluded path (not counted, still correlated)."""
    tracer = TracerProvider().get_tracer("tests")
    with configure(exclude_paths=["/echo/3/"]), tracer.start_as_current_span("around") as span:
        got = fetch(mode, path, {"X-Request-ID": "span-1"})
    assert got.ids == ["span-1"]
    assert span.attributes is not None and span.attributes["correlation.id"] == "span-1"


@MODES
def test_opentelemetry_metrics_with_url_scheme(mode: str) -> None:
    reader = InMemoryMetricReader()
    with configure(meter_provider=MeterProvider(metric_readers=[reader])):
        if mode == "sync":
            assert Client().get("/echo/1/", secure=True).status_code == 200
        else:
            async def secure() -> int:
                return int((await AsyncClient().get("/echo/1/", secure=True)).status_code)

            assert asyncio.run(secure()) == 200
        assert fetch(mode, "/boom/").status == 500
        assert fetch(mode, "/nowhere/").status == 404
    points, active = otel_http_points(reader)
    get = {("http.request.method", "GET")}
    assert points == {
        frozenset(get | {("url.scheme", "https"), ("http.route", "/echo/<int:n>/"),
                         ("http.response.status_code", 200)}): 1,
        frozenset(get | {("url.scheme", "http"), ("http.route", "/boom/"),
                         ("http.response.status_code", 500), ("error.type", "RuntimeError")}): 1,
        frozenset(get | {("url.scheme", "http"), ("http.response.status_code", 404)}): 1,
    }
    assert active == {frozenset(get | {("url.scheme", "https")}): 0,
                      frozenset(get | {("url.scheme", "http")}): 0}

"""Property-based: over generated ASGI scopes (methods, paths with arbitrary bytes, headers
with arbitrary bytes and sizes, optional keys missing), the middleware raises only where the
bare app raises, sends exactly what the bare app sends, and /metrics stays valid."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware
from tests.support.asgi import call_asgi

OPTIONAL_KEYS = (
    "asgi", "http_version", "method", "scheme", "path", "raw_path", "root_path",
    "query_string", "headers", "client", "server",
)

header_bytes = st.binary(max_size=64) | st.binary(min_size=1000, max_size=9000)
methods = (
    st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
                     "CONNECT", "get", "_OTHER", ""])
    | st.text(max_size=40)
    | st.binary(max_size=20)
    | st.none()
    | st.just(["GET"])  # not even hashable
)
paths = (
    st.binary(max_size=200).map(lambda raw: "/" + raw.decode("latin-1"))
    | st.text(max_size=100)
    | st.sampled_from(["/", "/items/1", "/items/", "/fail", "/metrics/", "//metrics"])
)


@st.composite
def scopes(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(paths)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": draw(st.sampled_from(["1.0", "1.1", "2"])),
        "method": draw(methods),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "root_path": draw(st.sampled_from(["", "/prefix", "/items"])),
        "query_string": draw(st.binary(max_size=100)),
        "headers": draw(st.lists(st.tuples(header_bytes, header_bytes), max_size=12)),
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }
    for key in draw(st.sets(st.sampled_from(OPTIONAL_KEYS))):
        del scope[key]
    return scope


async def _raw_app(scope: Any, receive: Any, send: Any) -> None:
    """A bare app that reads the body and answers from what the scope says."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope.get("path", "")
    if path.endswith("/fail"):
        raise ValueError("app failure")
    await send({
        "type": "http.response.start",
        "status": 200 + len(scope.get("headers", [])),
        "headers": [(b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def _item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def _fail(request: Request) -> PlainTextResponse:
    raise ValueError("app failure")


def _starlette_app() -> Starlette:
    return Starlette(routes=[Route("/items/{item_id}", _item), Route("/fail", _fail)])


def _outcome(app: Any, scope: dict[str, Any], body: bytes) -> Any:
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent, exc = asyncio.run(call_asgi(app, dict(scope), incoming))
    return sent, None if exc is None else (type(exc), str(exc))


def _assert_valid_metrics(app: MetricsMiddleware, headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "method": "GET", "path": "/metrics", "headers": headers}
    sent, exc = asyncio.run(call_asgi(app, scope))
    assert exc is None
    assert sent[0]["status"] == 200
    body = sent[1]["body"]
    if (b"content-encoding", b"gzip") in sent[0]["headers"]:
        import gzip

        body = gzip.decompress(body)
    text = body.decode("utf-8")
    if text.endswith("# EOF\n"):  # OpenMetrics: its own parser
        from prometheus_client.openmetrics.parser import (
            text_string_to_metric_families as parse_openmetrics,
        )

        list(parse_openmetrics(text))
    else:
        list(text_string_to_metric_families(text))


RAW = MetricsMiddleware(_raw_app, registry=CollectorRegistry(), request_size=True,
                        response_size=True, time_to_first_byte=True)
STARLETTE_BARE = _starlette_app()
STARLETTE = MetricsMiddleware(_starlette_app(), registry=CollectorRegistry())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scope=scopes(), body=st.binary(max_size=2000))
def test_raw_app_behaves_as_bare(scope: dict[str, Any], body: bytes) -> None:
    if scope.get("path") == "/metrics":
        return  # the one path the middleware answers itself
    assert _outcome(RAW, scope, body) == _outcome(_raw_app, scope, body)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scope=scopes(), body=st.binary(max_size=200))
def test_starlette_app_behaves_as_bare(scope: dict[str, Any], body: bytes) -> None:
    if scope.get("path") == "/metrics":
        return
    assert _outcome(STARLETTE, scope, body) == _outcome(STARLETTE_BARE, scope, body)


@settings(max_examples=100, deadline=None)
@given(headers=st.lists(
    st.tuples(
        st.sampled_from([b"accept", b"accept-encoding", b"authorization", b"x-other"])
        | st.binary(max_size=20),
        st.binary(max_size=300)
        | st.sampled_from([
            b"application/openmetrics-text; version=1.0.0",
            b"application/openmetrics-text; q=nan, text/plain;q=inf",
            b"gzip;q=0.5, deflate",
            b"gzip;q=x",
        ]),
    ),
    max_size=6,
))
def test_metrics_endpoint_stays_valid_under_any_headers(
    headers: list[tuple[bytes, bytes]],
) -> None:
    _assert_valid_metrics(RAW, headers)
    _assert_valid_metrics(STARLETTE, headers)

"""Fail-open: whatever part of recording fails, the client gets exactly what the bare app
sends, and the failure is logged once per kind (rate-limited), not once per request.

Faults are injected through public seams only: the store instance the recorder holds, a
broken scope, a raising route_resolver, a current OpenTelemetry span that breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_metrics import MetricsMiddleware
from tests.support.asgi import Message, call_asgi, fetch_metrics, uvicorn_scope
from tests.support.otel import broken_span


class Boom(RuntimeError):
    """The injected fault."""


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise Boom("injected fault")


async def _ok(request: Request) -> PlainTextResponse:
    await request.body()
    return PlainTextResponse("hello", headers={"x-app": "1"})


async def _fail(request: Request) -> PlainTextResponse:
    raise ValueError("the app failed")


async def _stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            yield f"chunk {index}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    text = await websocket.receive_text()
    await websocket.send_text(text.upper())
    await websocket.close()


def _app() -> Starlette:
    return Starlette(routes=[
        Route("/ok", _ok, methods=["GET", "POST"]),
        Route("/fail", _fail),
        Route("/stream", _stream),
        WebSocketRoute("/ws", _ws),
    ])


def _calls() -> list[tuple[str, dict[str, Any], list[Message]]]:
    body = [{"type": "http.request", "body": b"payload", "more_body": False}]
    return [
        ("200", uvicorn_scope("/ok", "POST"), body),
        ("404", uvicorn_scope("/nowhere"), body),
        ("500", uvicorn_scope("/fail"), body),
        ("streaming", uvicorn_scope("/stream"), body),
        ("websocket", {**uvicorn_scope("/ws"), "type": "websocket", "subprotocols": []},
         [{"type": "websocket.connect"},
          {"type": "websocket.receive", "text": "hi"}]),
    ]


def _outcome(app: Any, scope: dict[str, Any], incoming: list[Message]) -> Any:
    sent, exc = asyncio.run(call_asgi(app, dict(scope), list(incoming)))
    return sent, None if exc is None else (type(exc), str(exc))


EXPECTED = {name: _outcome(_app(), scope, incoming) for name, scope, incoming in _calls()}

OPTIONS: dict[str, Any] = {
    "time_to_first_byte": True, "request_size": True, "response_size": True,
}


def _middleware(app: Any = None, **options: Any) -> MetricsMiddleware:
    return MetricsMiddleware(
        _app() if app is None else app, registry=CollectorRegistry(), **OPTIONS, **options
    )


class _BrokenRouter:
    """A route object in ``scope["router"]`` whose route list cannot be read (Starlette
    leaves a router already there in place; its own routing does not use it)."""

    @property
    def routes(self) -> Any:
        raise Boom("injected fault")


def _with_broken_router(app: Any) -> Any:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["router"] = _BrokenRouter()
        await app(scope, receive, send)

    return wrapped


def _store_method(name: str) -> Fault:
    def inject(monkeypatch: pytest.MonkeyPatch) -> tuple[MetricsMiddleware, Any]:
        mw = _middleware()
        monkeypatch.setattr(mw.recorder.store, name, _raise)
        return mw, contextlib.nullcontext()
    return inject


# Every fault goes in through a public seam: the store instance the recorder holds, the
# scope a (broken) app or server hands over, a route_resolver, the current OpenTelemetry
# span. name -> (the middleware and the context to serve in, the failure kind it logs).
Fault = Callable[[pytest.MonkeyPatch], tuple[MetricsMiddleware, Any]]

FAULTS: dict[str, tuple[Fault, str]] = {
    "store.start": (_store_method("start"), "recording a request start"),
    "store.observe": (_store_method("observe"), "recording a request"),
    "store.observe_extra": (_store_method("observe_extra"), "recording a request"),
    # Starlette has sent its 500 before the exception reaches us: counted afterwards.
    "store.count_exception": (_store_method("count_exception"), "recording an exception"),
    "built-in route lookup": (
        lambda mp: (_middleware(_with_broken_router(_app())), contextlib.nullcontext()),
        "route lookup",
    ),
    "route_resolver": (
        lambda mp: (_middleware(route_resolver=_raise), contextlib.nullcontext()),
        "route lookup",
    ),
    # Exemplars are on by default (OpenTelemetry is installed in the test environment).
    "span lookup": (
        lambda mp: (_middleware(), broken_span("span lookup")), "span lookup",
    ),
    "span attribute": (
        lambda mp: (_middleware(correlation_id=True), broken_span("attribute")),
        "setting the correlation ID span attribute",
    ),
    # Choosing the ID needs the span's trace ID here, and reading it fails: the request
    # is served as if the middleware were not there, header included.
    "correlation ID choice": (
        lambda mp: (
            _middleware(correlation_id=True, trace_id_as_correlation_id=True),
            broken_span("span lookup"),
        ),
        "reading the request",
    ),
}
# With correlation IDs on, the response carries a header the bare app does not send.
WITH_HEADER = {"span attribute"}


def _without_id_header(outcome: Any) -> Any:
    sent, exc = outcome
    for message in sent:
        if message.get("type") == "http.response.start":
            message["headers"] = [h for h in message["headers"] if h[0] != b"x-request-id"]
    return sent, exc


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_client_sees_the_bare_app_whatever_fails(
    fault: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inject, kind = FAULTS[fault]
    mw, serving = inject(monkeypatch)
    caplog.set_level(logging.ERROR, logger="asgi_metrics")
    with serving:
        for _ in range(3):  # repeated, so the rate limit shows
            for name, scope, incoming in _calls():
                outcome = _outcome(mw, scope, incoming)
                if fault in WITH_HEADER:
                    outcome = _without_id_header(outcome)
                assert outcome == EXPECTED[name], (fault, name)
    records = [r for r in caplog.records if r.name == "asgi_metrics"]
    kinds = [r.getMessage().split(" failed")[0].removeprefix("HTTP metrics: ") for r in records]
    # At least one failure was logged, with its traceback, and each kind only once.
    assert kind in kinds, kinds
    assert len(kinds) == len(set(kinds)), kinds
    assert all(r.exc_info for r in records)
    # The endpoint still answers with a valid exposition.
    status, _ = asyncio.run(fetch_metrics(mw))
    assert status == 200


def test_a_method_that_cannot_be_labelled_is_served_unmeasured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken server's unhashable method: the app gets the request as it came, the
    failure is logged once, nothing is counted."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = _middleware(app)
    caplog.set_level(logging.ERROR, logger="asgi_metrics")
    scope = {**uvicorn_scope("/ok"), "method": ["GET"]}
    for _ in range(3):
        assert _outcome(mw, scope, []) == _outcome(app, scope, [])
    kinds = [r.getMessage() for r in caplog.records if r.name == "asgi_metrics"]
    assert len(kinds) == 1 and kinds[0].startswith("HTTP metrics: reading the request failed")
    _, text = asyncio.run(fetch_metrics(mw))
    assert "http_requests_total{" not in text


def test_route_resolver_returning_garbage_is_unmatched() -> None:
    for garbage in (None, 42, b"/bytes", object()):
        mw = MetricsMiddleware(
            _app(), registry=CollectorRegistry(), route_resolver=lambda scope, g=garbage: g
        )
        assert _outcome(mw, *_calls()[0][1:]) == EXPECTED["200"]
        _, text = asyncio.run(fetch_metrics(mw))
        assert 'route="__unmatched__"' in text


def test_failure_log_summarises_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    from asgi_metrics.core.failures import FailureLog

    log = FailureLog(interval=0.0)
    caplog.set_level(logging.ERROR, logger="asgi_metrics")
    log.report("x", Boom("1"))
    log.report("x", Boom("2"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "1 more times" in messages[1]
    limited = FailureLog(interval=3600)
    caplog.clear()
    for index in range(100):
        limited.report("y", Boom(str(index)))
    assert len(caplog.records) == 1

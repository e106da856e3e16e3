"""Fail-open: whatever part of recording fails, the client gets exactly what the bare app
sends, and the failure is logged once per kind (rate-limited), not once per request.

Faults are injected into the real code paths: the store's methods on the instance, the
route lookup, the label functions the middleware imports.
"""

from __future__ import annotations

import asyncio
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

import asgi_metrics.asgi.middleware
import asgi_metrics.core.store
import asgi_metrics.correlation.ids
from asgi_metrics import MetricsMiddleware
from tests.support.hardening import Message, call_asgi, http_scope, scrape


class Boom(RuntimeError):
    """The injected fault."""


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise Boom("injected fault")


class _Raising:
    """A label table whose every lookup fails."""

    def __contains__(self, item: object) -> bool:
        raise Boom("injected fault")

    def get(self, *args: object) -> str:
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
        ("200", http_scope("/ok", "POST"), body),
        ("404", http_scope("/nowhere"), body),
        ("500", http_scope("/fail"), body),
        ("streaming", http_scope("/stream"), body),
        ("websocket", {**http_scope("/ws"), "type": "websocket", "subprotocols": []},
         [{"type": "websocket.connect"},
          {"type": "websocket.receive", "text": "hi"}]),
    ]


def _outcome(app: Any, scope: dict[str, Any], incoming: list[Message]) -> Any:
    sent, exc = asyncio.run(call_asgi(app, dict(scope), list(incoming)))
    return sent, None if exc is None else (type(exc), str(exc))


EXPECTED = {name: _outcome(_app(), scope, incoming) for name, scope, incoming in _calls()}

# name -> (what to break, the failure kind it logs). Each gets a fresh middleware.
Fault = Callable[[MetricsMiddleware, pytest.MonkeyPatch], None]


def _store_method(name: str) -> Fault:
    def inject(mw: MetricsMiddleware, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(mw.recorder.store, name, _raise)
    return inject


def _new_id_raises(mw: MetricsMiddleware, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every caller: the ASGI fast path (pool, then refill) and the policy object's.
    monkeypatch.setattr(asgi_metrics.asgi.middleware, "take_id", _raise)
    monkeypatch.setattr(asgi_metrics.asgi.middleware, "new_id", _raise)
    monkeypatch.setattr(asgi_metrics.correlation.ids, "new_id", _raise)


def _exemplar_store_raises(mw: MetricsMiddleware, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if every request ran in a sampled span, so the exemplar is stored, and fails.
    monkeypatch.setattr(asgi_metrics.asgi.middleware, "current_span_ids", lambda: (1, 2))
    monkeypatch.setattr(asgi_metrics.core.store, "time", _raise)


def _user_resolver_raises(mw: MetricsMiddleware, monkeypatch: pytest.MonkeyPatch) -> None:
    # As if built with route_resolver=<a user callable that raises>.
    monkeypatch.setattr(mw, "_route_resolver", _raise)
    monkeypatch.setattr(mw, "_lookup", mw._resolve)


FAULTS: dict[str, tuple[Fault, str]] = {
    # The recorder binds store.start once, at start-up.
    # The ASGI middleware counts a request in flight straight in the store (one call
    # less); a failure there leaves the request unmeasured, served as by the bare app.
    "store.start": (
        lambda mw, mp: mp.setattr(mw.recorder.store, "start", _raise), "reading the request",
    ),
    "store.observe": (_store_method("observe"), "recording a request"),
    "store.observe_extra": (_store_method("observe_extra"), "recording a request"),
    # Starlette has sent its 500 before the exception reaches us: counted afterwards.
    "store.count_exception": (_store_method("count_exception"), "recording an exception"),
    "built-in route lookup": (
        lambda mw, mp: mp.setattr(mw, "_lookup", _raise), "route lookup",
    ),
    "route_resolver": (
_user_resolver_raises, "route lookup"
    ),
    "method label": (
        lambda mw, mp: mp.setattr(asgi_metrics.asgi.middleware, "KNOWN_METHODS", _Raising()),
        "reading the request",
    ),
    "status label": (
        lambda mw, mp: mp.setattr(mw.recorder, "_status_labels", _Raising()),
        "recording a request",
    ),
    "exclusion check": (
        lambda mw, mp: mp.setattr(mw, "_counts", _raise), "reading the request",
    ),
    # Exemplars are on by default (OpenTelemetry is installed in the test environment).
    "span lookup": (
        lambda mw, mp: mp.setattr(asgi_metrics.asgi.middleware, "current_span_ids", _raise),
        "span lookup",
    ),
    "exemplar store": (_exemplar_store_raises, "recording a request"),
    # These three need correlation IDs on (see WITH_CORRELATION): when making the ID
    # fails, the request is served as if the middleware were not there, header included.
    "correlation ID generation": (_new_id_raises, "reading the request"),
    "correlation ID choice": (
        lambda mw, mp: mp.setattr(mw._correlation, "choose", _raise), "reading the request",
    ),
}
WITH_CORRELATION = {"correlation ID generation", "correlation ID choice"}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_client_sees_the_bare_app_whatever_fails(
    fault: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inject, kind = FAULTS[fault]
    extra: dict[str, Any] = {}
    if fault in WITH_CORRELATION:
        extra = {"correlation_id": True, "trace_id_as_correlation_id": True}
    mw = MetricsMiddleware(
        _app(), registry=CollectorRegistry(), time_to_first_byte=True, request_size=True,
        response_size=True, **extra,
    )
    inject(mw, monkeypatch)
    caplog.set_level(logging.ERROR, logger="asgi_metrics")
    for _ in range(3):  # repeated, so the rate limit shows
        for name, scope, incoming in _calls():
            assert _outcome(mw, scope, incoming) == EXPECTED[name], (fault, name)
    records = [r for r in caplog.records if r.name == "asgi_metrics"]
    kinds = [r.getMessage().split(" failed")[0].removeprefix("HTTP metrics: ") for r in records]
    # At least one failure was logged, with its traceback, and each kind only once.
    assert kind in kinds, kinds
    assert len(kinds) == len(set(kinds)), kinds
    assert all(r.exc_info for r in records)
    # The endpoint still answers with a valid exposition.
    status, _ = asyncio.run(scrape(mw))
    assert status == 200


def test_route_resolver_returning_garbage_is_unmatched() -> None:
    for garbage in (None, 42, b"/bytes", object()):
        mw = MetricsMiddleware(
            _app(), registry=CollectorRegistry(), route_resolver=lambda scope, g=garbage: g
        )
        assert _outcome(mw, *_calls()[0][1:]) == EXPECTED["200"]
        _, text = asyncio.run(scrape(mw))
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

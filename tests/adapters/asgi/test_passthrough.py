"""The middleware only watches: every message the app sends reaches the server unchanged,
and non-HTTP scopes pass straight through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from asgi_metrics import OTHER_METHOD, UNMATCHED_ROUTE
from asgi_metrics.core.labels import KNOWN_METHODS
from tests.support.asgi import drive, http_scope, scrape, wrap
from tests.support.scrape import REQUEST, samples

pytestmark = pytest.mark.anyio


async def echo(request: Request) -> Response:
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "raw_path": repr(request.scope.get("raw_path")),
            "root_path": request.scope.get("root_path"),
            "client": repr(request.client),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")]
                        for k, v in request.scope["headers"]],
            "params": request.path_params,
        },
        headers={"x-raw": "caf\u00e9"},
    )


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol="chat")
    text = await websocket.receive_text()
    await websocket.send_text(text.upper())
    await websocket.send_bytes(b"\xff\x00")
    await websocket.close(code=4001)


def build_app(events: list[str] | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        if events is not None:
            events.append("startup")
        yield {"state": 1}
        if events is not None:
            events.append("shutdown")

    return Starlette(
        routes=[
            Route("/echo/{name}", echo, methods=["GET", "POST", "PUT"]),
            Route("/plain", lambda request: PlainTextResponse("plain")),
            Mount("/m/{tenant}", routes=[Route("/echo", echo)]),
            WebSocketRoute("/ws/{room}", ws_endpoint),
        ],
        lifespan=lifespan,
    )



async def run_protocol(
    app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Drive any ASGI protocol: feed ``incoming`` in order, record what is sent."""
    sent: list[dict[str, Any]] = []
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in incoming:
        queue.put_nowait(message)

    async def send(message: dict[str, Any]) -> None:
        sent.append(dict(message))

    await asyncio.wait_for(app(dict(scope), queue.get, send), timeout=5)
    return sent


async def test_websocket_passes_through_untouched() -> None:
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/ws/lobby",
        "raw_path": b"/ws/lobby",
        "query_string": b"",
        "headers": [(b"host", b"x"), (b"sec-websocket-protocol", b"chat")],
        "subprotocols": ["chat"],
        "scheme": "ws",
        "server": ("x", 80),
    }
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    bare = await run_protocol(build_app(), scope, incoming)
    app = wrap(build_app())
    wrapped = await run_protocol(app, scope, incoming)
    assert bare == wrapped
    assert bare[0] == {"type": "websocket.accept", "subprotocol": "chat", "headers": []}
    assert {"type": "websocket.send", "text": "HI"} in wrapped
    families = await scrape(app)
    assert samples(families, REQUEST) == []
    assert samples(families, "http_requests_in_flight") == []


async def test_lifespan_passes_through_untouched() -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    bare_events: list[str] = []
    bare = await run_protocol(
        build_app(bare_events), {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
        incoming,
    )
    events: list[str] = []
    app = wrap(build_app(events))
    state: dict[str, Any] = {}
    wrapped = await run_protocol(
        app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": state}, incoming
    )
    assert bare == wrapped == [
        {"type": "lifespan.startup.complete"},
        {"type": "lifespan.shutdown.complete"},
    ]
    assert events == bare_events == ["startup", "shutdown"]
    assert samples(await scrape(app), REQUEST) == []


ODD_SCOPES = [
    http_scope("/echo/caf%C3%A9", headers=[(b"x-bin", b"\xff\xfe\x00\x80"),
                                           (b"x-\xe9", b"latin \xe9")]),
    http_scope("/echo/\ufffd", raw_path=b"/echo/%FF"),  # what uvicorn makes of %FF
    http_scope("/echo/x", raw_path=b"/echo/%FF%FE?"),
    {k: v for k, v in http_scope("/echo/nokeys").items()
     if k not in ("client", "root_path", "raw_path")},
    {k: v for k, v in http_scope("/m/t1/echo").items() if k not in ("client", "server")},
    http_scope("/echo/y", method="BREW", headers=[(b"content-length", b"3")]),
    http_scope("/proxy/echo/z", root_path="/proxy"),
    http_scope("/nothing/here", headers=[(b"\x00\xff", b"\x01")]),
]


@pytest.mark.parametrize("scope", ODD_SCOPES)
async def test_sent_messages_are_exactly_what_the_bare_app_sends(scope: dict[str, Any]) -> None:
    bare = await drive(build_app(), scope, b"abc")
    app = wrap(build_app())
    wrapped = await drive(app, scope, b"abc")
    assert wrapped == bare
    assert bare[0]["type"] == "http.response.start"
    families = await scrape(app)
    assert sum(value for _, value in samples(families, REQUEST)) == 1


# Hypothesis: arbitrary scopes against one Starlette app, bare and wrapped.

methods = st.one_of(st.sampled_from(sorted(KNOWN_METHODS)), st.text(max_size=12))
paths = st.one_of(
    st.text(max_size=30).map(lambda text: "/" + text),
    st.sampled_from(["/echo/a", "/plain", "/m/x/echo", "/echo/", "/m/x/", "/ws/x"]),
    st.text(max_size=20),
)
header_lists = st.lists(st.tuples(st.binary(max_size=10), st.binary(max_size=20)), max_size=4)
optional_keys = st.sets(st.sampled_from(["client", "root_path", "raw_path", "server",
                                         "query_string", "http_version", "scheme"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=methods,
    path=paths,
    headers=header_lists,
    missing=optional_keys,
    raw_path=st.one_of(st.none(), st.binary(max_size=20)),
    body=st.binary(max_size=20),
)
def test_generated_scopes_are_passed_through_and_labels_stay_bounded(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    missing: set[str],
    raw_path: bytes | None,
    body: bytes,
) -> None:
    scope = http_scope(path, method=method, headers=headers)
    if raw_path is not None:
        scope["raw_path"] = raw_path
    for key in missing:
        scope.pop(key, None)

    async def outcome(app: Any) -> tuple[list[dict[str, Any]], str | None]:
        sent: list[dict[str, Any]] = []
        try:
            await drive(app, scope, body, sent=sent)
        except Exception as exc:
            return sent, repr(exc)
        return sent, None

    assert asyncio.run(outcome(BARE)) == asyncio.run(outcome(WRAPPED))

    snapshot = WRAPPED.recorder.store.snapshot()
    templates = {"/echo/{name}", "/plain", "/m/{tenant}/echo", UNMATCHED_ROUTE}
    statuses = set()
    for key_method, route, status in snapshot.requests:
        assert key_method in KNOWN_METHODS | {OTHER_METHOD}
        assert route in templates
        statuses.add(status)
    assert len(snapshot.requests) <= len(templates) * (len(KNOWN_METHODS) + 1) * len(statuses)
    assert sum(snapshot.in_flight.values()) == 0


BARE = build_app()
WRAPPED = wrap(BARE, metrics_path=None)

"""Drive ASGI apps in process: by hand (every message the app sends, in order), or
through an httpx client; scrape their /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from asgi_metrics import MetricsMiddleware
from tests.support.scrape import Families, parse_families

Message = dict[str, Any]


def wrap(app: Any, **options: Any) -> MetricsMiddleware:
    """``MetricsMiddleware(app)`` with its own registry (unless one is given) and no
    environment influence beyond what the test sets."""
    options.setdefault("registry", CollectorRegistry())
    return MetricsMiddleware(app, **options)


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A minimal, valid HTTP connection scope; ``extra`` overrides or adds keys."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


def uvicorn_scope(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A plain HTTP scope as uvicorn builds one. Unlike :func:`http_scope`, ``headers``
    (when given) are all the headers: no ``host`` is added."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "root_path": "",
        "query_string": b"",
        "headers": headers if headers is not None else [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    scope.update(extra)
    return scope


async def drive(
    app: Any,
    scope: Mapping[str, Any],
    body: bytes = b"",
    *,
    incoming: Iterable[Message] | None = None,
    sent: list[Message] | None = None,
) -> list[Message]:
    """Call ``app`` with a copy of ``scope``; return every message it sent, in order.

    ``receive`` yields ``incoming`` (default: one ``http.request`` with ``body``), then,
    like a real server, waits until the response is complete and answers
    ``http.disconnect``. Pass ``sent`` to see the messages even if the app raises.
    """
    sent = [] if sent is None else sent
    queue = list(
        incoming
        if incoming is not None
        else [{"type": "http.request", "body": body, "more_body": False}]
    )
    done = asyncio.Event()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(dict(message))
        if message.get("type") == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(dict(scope), receive, send)
    return sent


async def call_asgi(
    app: Any, scope: dict[str, Any], incoming: Iterable[Message] = ()
) -> tuple[list[Message], BaseException | None]:
    """Run one ASGI call; return the messages the app sent and what it raised (or None).

    ``incoming`` are the messages ``receive`` hands out, then ``http.disconnect`` (or
    ``websocket.disconnect``) forever.
    """
    queue = list(incoming)
    sent: list[Message] = []
    final: Message = (
        {"type": "websocket.disconnect", "code": 1000}
        if scope["type"] == "websocket"
        else {"type": "http.disconnect"}
    )

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(0)
        return final

    async def send(message: Message) -> None:
        # A copy: the comparison is about what the server was handed at that moment.
        sent.append(dict(message))

    try:
        await app(scope, receive, send)
    except BaseException as exc:
        return sent, exc
    return sent, None


def run(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop."""
    return asyncio.run(coro)


def client(app: Any) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def scrape_text(
    app: Any, path: str = "/metrics", headers: Mapping[str, str] | None = None
) -> str:
    async with client(app) as http:
        response = await http.get(path, headers=dict(headers or {}))
    assert response.status_code == 200, response.text
    return response.text  # httpx has undone any Content-Encoding


async def scrape(app: Any, path: str = "/metrics") -> Families:
    """GET ``path`` on ``app`` and parse the Prometheus text format."""
    return parse_families(await scrape_text(app, path))


async def fetch_metrics(
    app: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, str]:
    """GET /metrics through ``app`` by hand (:func:`call_asgi`); return status and body
    text, unparsed."""
    sent, exc = await call_asgi(app, uvicorn_scope("/metrics", headers=headers or []))
    assert exc is None, exc
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body.decode("utf-8")


async def get_all(app: Any, paths: Iterable[str], method: str = "GET") -> list[int]:
    """Send one request per path; return the statuses."""
    async with client(app) as http:
        return [(await http.request(method, path)).status_code for path in paths]

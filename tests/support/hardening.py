"""Helpers for the hardening tests: drive an ASGI app directly and read /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Message = dict[str, Any]


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


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A plain HTTP scope as uvicorn builds one."""
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


def run(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop."""
    return asyncio.run(coro)


async def scrape(app: Any, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, str]:
    """GET /metrics through ``app``; return status and body text."""
    sent, exc = await call_asgi(app, http_scope("/metrics", headers=headers or []))
    assert exc is None, exc
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body.decode("utf-8")


def samples(text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named ``family`` (e.g. ``http_requests_total``), parsed by
    prometheus_client's own parser, so the exposition is checked for validity too."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found

"""The ``/metrics`` endpoint as an ASGI app.

The middleware serves it at ``metrics_path``; :func:`metrics_app` builds one to mount
anywhere else. Rendering runs in a worker thread, so a large registry does not stall the
event loop for the requests being served meanwhile.
"""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, CollectorRegistry

from .scrape import Exposition
from .types import Receive, Scope, Send


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class MetricsEndpoint:
    """Serves an :class:`~asgi_metrics.scrape.Exposition` over ASGI (GET and HEAD)."""

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        method = scope.get("method", "GET")
        accept = _header(scope, b"accept")
        accept_encoding = _header(scope, b"accept-encoding")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): render inline
            status, headers, body = self.exposition.respond(method, accept, accept_encoding)
        else:
            status, headers, body = await loop.run_in_executor(
                None, self.exposition.respond, method, accept, accept_encoding
            )
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        })
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def metrics_app(registry: CollectorRegistry | None = None) -> MetricsEndpoint:
    """An ASGI app serving ``registry`` (default: prometheus_client's ``REGISTRY``),
    including every middleware's store registered there. Mount it where you like::

        app.mount("/internal/metrics", metrics_app())
    """
    return MetricsEndpoint(Exposition(REGISTRY if registry is None else registry))

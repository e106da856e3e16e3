"""The ``/metrics`` endpoint as an ASGI app.

The middleware serves it at ``metrics_path``; :func:`metrics_app` builds one to mount
anywhere else. Rendering runs in a worker thread, so a large registry does not stall the
event loop for the requests being served meanwhile. Concurrent scrapes of the same format
share one rendering (one executor job, awaited by all of them), and past
``max_concurrent_scrapes`` a scrape gets 503 at once instead of queueing.
"""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, CollectorRegistry

from asgi_metrics.asgi.types import Receive, Scope, Send
from asgi_metrics.core.settings import DEFAULT_MAX_CONCURRENT_SCRAPES, Settings
from asgi_metrics.exposition.auth import MetricsAuth
from asgi_metrics.exposition.scrape import Exposition, ScrapeRequest


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None

_LoopFuture = tuple[asyncio.AbstractEventLoop, "asyncio.Future[bytes]"]


class MetricsEndpoint:
    """Serves an :class:`~asgi_metrics.exposition.scrape.Exposition` over ASGI (GET and HEAD)."""

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition
        # Renderings in progress, per format, with the loop they belong to: a future can
        # only be awaited on its own loop (test suites start a loop per client).
        self._flights: dict[ScrapeRequest, _LoopFuture] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        method = scope.get("method", "GET")
        exposition = self.exposition
        answer = exposition.prepare(
            method,
            _header(scope, b"accept"),
            _header(scope, b"accept-encoding"),
            _header(scope, b"authorization"),
        )
        if isinstance(answer, ScrapeRequest):
            request = answer
            if not exposition.admit():
                answer = exposition.busy()
            else:
                try:
                    answer = exposition.answer(request, await self._body(request))
                finally:
                    exposition.release()
        status, headers, body = answer
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        })
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _body(self, request: ScrapeRequest) -> bytes:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio (trio): render inline, shared between threads
            return self.exposition.shared_body(request)
        flight = self._flights.get(request)
        if flight is None or flight[0] is not loop:
            future = loop.run_in_executor(None, self.exposition.body, request)
            self._flights[request] = (loop, future)
            future.add_done_callback(lambda done: self._landed(request, done))
        else:
            future = flight[1]
        # shield: one scrape's client going away must not cancel the others' rendering.
        return await asyncio.shield(future)

    def _landed(self, request: ScrapeRequest, future: asyncio.Future[bytes]) -> None:
        flight = self._flights.get(request)
        if flight is not None and flight[1] is future:
            del self._flights[request]
        if not future.cancelled():
            future.exception()  # retrieved, so a failure nobody awaited is not logged twice


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def metrics_app(
    registry: CollectorRegistry | None = None,
    *,
    bearer_token: str | None = None,
    basic_auth: tuple[str, str] | str | None = None,
    max_concurrent_scrapes: int = DEFAULT_MAX_CONCURRENT_SCRAPES,
) -> MetricsEndpoint:
    """An ASGI app serving ``registry`` (default: prometheus_client's ``REGISTRY``),
    including every middleware's store registered there. Mount it where you like::

        app.mount("/internal/metrics", metrics_app(bearer_token=os.environ["TOKEN"]))

    ``bearer_token`` / ``basic_auth`` (``(user, password)``) require credentials, as the
    middleware's ``metrics_bearer_token`` / ``metrics_basic_auth`` settings do.
    """
    settings = Settings.build({
        "metrics_bearer_token": bearer_token,
        "metrics_basic_auth": basic_auth,
        "max_concurrent_scrapes": max_concurrent_scrapes,
    }, {})
    return MetricsEndpoint(Exposition(
        REGISTRY if registry is None else registry,
        auth=MetricsAuth.from_settings(settings),
        max_concurrent_scrapes=settings.max_concurrent_scrapes,
    ))

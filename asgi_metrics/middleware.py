"""The pure ASGI middleware.

It passes every message through unchanged; it only looks at them. A request is timed from
its arrival to the moment the app hands the last body message to the server, so a
streaming response is timed in full and work after the response (background tasks) is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from .endpoint import MetricsEndpoint
from .labels import CLIENT_CLOSED_STATUS, KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE
from .recorder import Recorder
from .settings import ConfigurationError, Settings
from .starlette_routes import RouteTemplates
from .types import ASGIApp, Message, Receive, Scope, Send

RouteResolver = Callable[[Scope], "str | None"]

class MetricsMiddleware:
    """Counts and times every HTTP request and serves ``/metrics``.

    ``app.add_middleware(MetricsMiddleware)`` in Starlette/FastAPI, or
    ``app = MetricsMiddleware(app, **options)`` around any ASGI app. ``options`` are the
    settings documented in the README (``namespace``, ``buckets``, ``exclude_paths``, ...);
    ``HTTP_METRICS_*`` environment variables fill in what is not given.

    ``route_resolver(scope) -> str | None`` replaces the built-in Starlette/FastAPI route
    lookup; it is called after the app has handled the request and must return a route
    *template* (``None`` means unmatched).
    """

    def __init__(
        self, app: ASGIApp, *, route_resolver: RouteResolver | None = None, **options: Any
    ) -> None:
        if route_resolver is not None and not callable(route_resolver):
            raise ConfigurationError(
                f"setting 'route_resolver': expected a callable, got {route_resolver!r}"
            )
        self.app = app
        self.settings = Settings.build(options)
        self.recorder = Recorder(self.settings)
        #: The endpoint serving this middleware's metrics, to mount elsewhere if wanted.
        self.metrics_app = MetricsEndpoint(self.recorder.exposition)
        self._metrics_path = self.settings.metrics_path
        self._route_resolver = route_resolver
        self._templates = RouteTemplates()
        self._lookup: Callable[[Scope, str], str | None] = (
            self._templates.lookup if route_resolver is None else self._resolve
        )

    def _resolve(self, scope: Scope, root_path: str) -> str | None:
        assert self._route_resolver is not None
        return self._route_resolver(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path")
        if path == self._metrics_path:
            await self.metrics_app(scope, receive, send)
            return
        recorder = self.recorder
        if not isinstance(path, str) or not recorder.counts(path):
            await self.app(scope, receive, send)
            return

        start = perf_counter()
        method = scope.get("method")
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        exchange = _Exchange(self, scope, receive, send, method, start, recorder.start(method))
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            if not exchange.done:
                exchange.finish(exchange.status or CLIENT_CLOSED_STATUS)
            raise
        except BaseException as exc:
            if not exchange.done:
                exchange.finish(exchange.status or 500, exc)
            else:
                recorder.exception(method, exchange.route, exc)
            raise
        if not exchange.done:
            # The app returned without completing its response. With nothing started the
            # server answers 500 itself, unless the client had already gone.
            exchange.finish(
                exchange.status or (CLIENT_CLOSED_STATUS if exchange.disconnected else 500)
            )


class _Exchange:
    """One request in progress: watches the messages going by, records the request once
    its response is complete."""

    __slots__ = (
        "_receive", "_send", "disconnected", "done", "in_flight", "method", "middleware",
        "request_size", "response_size", "root_path", "route", "scope", "start", "status",
        "trailers", "ttfb",
    )

    def __init__(
        self,
        middleware: MetricsMiddleware,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        start: float,
        in_flight: bool,
    ) -> None:
        self.middleware = middleware
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method = method
        self.start = start
        self.in_flight = in_flight
        # root_path as it arrived: Starlette's Mounts extend it while routing.
        self.root_path = scope.get("root_path", "")
        self.status = 0  # 0 until the response starts
        self.done = False
        self.disconnected = False
        self.trailers = False
        self.route = UNMATCHED_ROUTE
        self.ttfb: float | None = None
        self.request_size = 0
        self.response_size = 0

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request":
            body = message.get("body")
            if body:
                self.request_size += len(body)
        elif kind == "http.disconnect":
            self.disconnected = True
        return message

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning send's awaitable: one coroutine less per message.
        # The request is recorded as the app hands its last message to the server.
        kind = message["type"]
        if kind == "http.response.body":
            body = message.get("body")
            if body:
                self.response_size += len(body)
            if not message.get("more_body") and not self.trailers and not self.done:
                self.finish(self.status)
        elif kind == "http.response.start":
            self.status = message.get("status", 0)
            self.ttfb = perf_counter() - self.start
            if message.get("trailers"):
                self.trailers = True
        elif not self.done and (
            kind == "http.response.pathsend"
            or (kind == "http.response.zerocopysend" and not message.get("more_body"))
            or (kind == "http.response.trailers" and not message.get("more_trailers"))
        ):
            self.finish(self.status)
        return self._send(message)

    def finish(self, status: int, exc: BaseException | None = None) -> None:
        self.done = True
        middleware = self.middleware
        recorder = middleware.recorder
        try:
            route = middleware._lookup(self.scope, self.root_path)
            if not isinstance(route, str):
                route = UNMATCHED_ROUTE
        except Exception as failure:
            recorder.failures.report("route lookup", failure)
            route = UNMATCHED_ROUTE
        self.route = route
        recorder.finish(
            self.method, route, status, perf_counter() - self.start, self.in_flight, exc,
            self.ttfb, self.request_size, self.response_size,
        )

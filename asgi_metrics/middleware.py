"""The pure ASGI middleware.

It passes every message through unchanged; it only looks at them. A request is timed from
its arrival to the moment the last body message has been handed to the server, so a
streaming response is timed in full and work after the response (background tasks) is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from time import perf_counter
from typing import Any

from .endpoint import MetricsEndpoint
from .labels import CLIENT_CLOSED_STATUS, UNMATCHED_ROUTE, method_label
from .recorder import Recorder
from .settings import ConfigurationError, Settings
from .starlette_routes import RouteTemplates
from .types import ASGIApp, Message, Receive, Scope, Send

RouteResolver = Callable[[Scope], "str | None"]

_FINAL_BODY_TYPES = ("http.response.body", "http.response.zerocopysend")


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

    def _route(self, scope: Scope, root_path: str) -> str:
        try:
            if self._route_resolver is not None:
                route = self._route_resolver(scope)
            else:
                route = self._templates.lookup(scope, root_path)
            return route if isinstance(route, str) else UNMATCHED_ROUTE
        except Exception as exc:
            self.recorder.failures.report("route lookup", exc)
            return UNMATCHED_ROUTE

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
        method = method_label(scope.get("method"))
        root_path = scope.get("root_path", "")
        in_flight = recorder.start(method)
        status = 0  # 0 until the response starts
        trailers = False
        done = False
        disconnected = False
        route = UNMATCHED_ROUTE
        ttfb: float | None = None
        request_size = 0
        response_size = 0

        def finish(final_status: int, exc: BaseException | None = None) -> None:
            nonlocal done, route
            done = True
            route = self._route(scope, root_path)
            recorder.finish(
                method, route, final_status, perf_counter() - start,
                in_flight=in_flight, exc=exc, ttfb=ttfb,
                request_size=request_size, response_size=response_size,
            )

        async def receive_wrapper() -> Message:
            nonlocal disconnected, request_size
            message = await receive()
            kind = message.get("type")
            if kind == "http.request":
                body = message.get("body")
                if body:
                    request_size += len(body)
            elif kind == "http.disconnect":
                disconnected = True
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, trailers, ttfb, response_size
            kind = message.get("type")
            if kind == "http.response.start":
                status = message.get("status", 0)
                trailers = bool(message.get("trailers"))
                ttfb = perf_counter() - start
                await send(message)
                return
            if kind in _FINAL_BODY_TYPES:
                body = message.get("body")
                if body:
                    response_size += len(body)
                await send(message)
                if not message.get("more_body") and not trailers and not done:
                    finish(status)
                return
            await send(message)
            if not done and (
                kind == "http.response.pathsend"
                or (kind == "http.response.trailers" and not message.get("more_trailers"))
            ):
                finish(status)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except asyncio.CancelledError:
            if not done:
                finish(status or CLIENT_CLOSED_STATUS)
            raise
        except BaseException as exc:
            if not done:
                finish(status or 500, exc)
            else:
                recorder.exception(method, route, exc)
            raise
        if not done:
            # The app returned without completing its response. With nothing started the
            # server answers 500 itself, unless the client had already gone.
            finish(status or (CLIENT_CLOSED_STATUS if disconnected else 500))

"""The pure ASGI middleware.

It passes every message through unchanged; it only looks at them (with
``correlation_id=True`` it adds one header to ``http.response.start``, the one change it
makes). A request is timed from its arrival to the moment the app hands the last body
message to the server, so a streaming response is timed in full and work after the
response (background tasks) is not. The observer of one request is
:class:`~asgi_metrics.asgi.exchange.Exchange`; what a request needs is decided once, in
:class:`~asgi_metrics.asgi.exchange.Plan`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Token
from typing import Any

from asgi_metrics.asgi.correlation import answer_error
from asgi_metrics.asgi.endpoint import MetricsEndpoint
from asgi_metrics.asgi.exchange import Exchange, Plan, UncountedExchange
from asgi_metrics.asgi.headers import request_header
from asgi_metrics.asgi.labels import AsgiHeaders
from asgi_metrics.asgi.types import ASGIApp, Receive, Scope, Send
from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS, method_labels
from asgi_metrics.core.rules import path_filter
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.correlation.context import current_correlation_id, reset_correlation_id
from asgi_metrics.correlation.ids import CorrelationIds
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE
from asgi_metrics.routes import RouteLookup, lookup_for
from asgi_metrics.wiring import build

RouteResolver = Callable[[Scope], "str | None"]


class MetricsMiddleware:
    """Counts and times every HTTP request and serves ``/metrics``.

    ``app.add_middleware(MetricsMiddleware)`` in Starlette/FastAPI,
    ``app = MetricsMiddleware(Litestar(...))``, ``app.asgi_app =
    MetricsMiddleware(app.asgi_app)`` in Quart, or ``app = MetricsMiddleware(app,
    **options)`` around any ASGI app. ``options`` are the settings documented in
    ``docs/configuration.md`` (``namespace``, ``buckets``, ``exclude_paths``, ...);
    ``HTTP_METRICS_*`` environment variables fill in what is not given.

    ``route_resolver(scope) -> str | None`` replaces the built-in route lookup
    (Starlette/FastAPI, Litestar, Quart); it is called after the app has handled the
    request and must return a route *template* (``None`` means unmatched).
    """

    def __init__(
        self, app: ASGIApp, *, route_resolver: RouteResolver | None = None, **options: Any
    ) -> None:
        self.app = app
        self.settings = settings = Settings.build(options)
        if not settings.enabled:
            # A pass-through: nothing is built or registered, no framework is hooked.
            self.__class__ = _Disabled
            return
        lookup = _route_lookup(app, route_resolver)  # checked before anything is registered
        parts = build(settings)
        self.recorder = parts.recorder
        self.exposition = parts.exposition
        #: The endpoint serving this middleware's metrics, to mount elsewhere if wanted.
        self.metrics_app = MetricsEndpoint(self.exposition)
        self._metrics_path = settings.metrics_path
        self._counts = path_filter(settings)
        self._methods = method_labels(settings.exclude_methods)
        self._correlation = CorrelationIds(settings) if settings.correlation_id else None
        labels = parts.request_labels(AsgiHeaders())
        self._plan = Plan(
            self.recorder, lookup, parts.exemplars,
            span_attribute=self._correlation is not None and OTEL_AVAILABLE,
            labels=labels,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path")
        if scope.get("root_path"):
            path = request_path(scope)
        if path == self._metrics_path:
            await self.metrics_app(scope, receive, send)
            return
        if self._correlation is None:
            # Without correlation IDs only counted requests get an exchange.
            try:
                method = self._methods(scope.get("method"))
                exchange = (
                    self._plan.exchange(self._plan, scope, receive, send, method, None, None)
                    if self._counts(path) and method is not None else None
                )
            except Exception as exc:
                self._unread(exc, None)
                exchange = None
        else:
            exchange = self._begin(scope, path, receive, send)
        if exchange is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, exchange.receive, exchange.send)
        except BaseException as exc:
            await _failed(exchange, scope, send, exc)
            raise
        if not exchange.done:
            # The app returned without completing its response. With nothing started the
            # server answers 500 itself, unless the client had already gone.
            exchange.finish(exchange.unfinished_status())
        # Only on success: after an unhandled exception the ID stays set, so the outer
        # error handler and the server's error log line still see it (a request's context
        # ends with its task anyway).
        if exchange.token is not None:
            exchange.release()

    def _begin(self, scope: Scope, path: object, receive: Receive, send: Send) -> Exchange | None:
        """With correlation IDs: the request's observer, its ID set (an excluded path gets
        an uncounted one); ``None`` when reading the request failed."""
        assert self._correlation is not None
        token = None
        try:
            correlation = self._correlation
            client = scope.get("client")
            cid = correlation.for_request(
                request_header(scope, correlation.header_bytes),
                client[0] if client else None,
            )
            header = (correlation.header_bytes, cid.encode("ascii"))
            token = current_correlation_id.set(cid)
            exchange: Exchange
            method = self._methods(scope.get("method"))
            if self._counts(path) and method is not None:
                exchange = self._plan.exchange(self._plan, scope, receive, send, method, cid, token)
            else:
                exchange = UncountedExchange(self._plan, scope, receive, send, "", cid, token)
            exchange.id_header = header
            return exchange
        except Exception as exc:
            self._unread(exc, token)
            return None

    def _unread(self, exc: Exception, token: Token[str | None] | None) -> None:
        """Reading the request failed: it is served as if we were not there (no ID set),
        and the failure is logged."""
        self.recorder.failures.report("reading the request", exc)
        reset_correlation_id(token)


class _Disabled(MetricsMiddleware):
    """``enabled=False``: the app, untouched."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def _failed(exchange: Exchange, scope: Scope, send: Send, exc: BaseException) -> None:
    """The app raised: record the request (or count the exception, if it was recorded),
    and answer the 500 with the correlation header when nothing was sent yet."""
    if isinstance(exc, asyncio.CancelledError):  # the client went away: not an error
        if not exchange.done:
            exchange.finish(exchange.status or CLIENT_CLOSED_STATUS)
    elif exchange.done:
        exchange.late_exception(exc)
    else:
        if not exchange.status and exchange.id_header is not None and isinstance(exc, Exception):
            await answer_error(scope, send, exchange.id_header)
        exchange.finish(exchange.unfinished_status(), exc)


def _route_lookup(app: ASGIApp, resolver: RouteResolver | None) -> RouteLookup:
    """The built-in lookup for the wrapped app's framework, or the user's resolver.

    The framework's is found either way: finding it also hooks the framework's exception
    handling (Litestar, Quart), which a user's resolver does not replace."""
    framework = lookup_for(app)
    if resolver is None:
        return framework
    if not callable(resolver):
        raise ConfigurationError(
            f"setting 'route_resolver': expected a callable, got {resolver!r}"
        )

    def resolve(scope: Scope, root_path: str) -> str | None:
        return resolver(scope)

    return resolve


def request_path(scope: Scope) -> object:
    """The path without the server's ``root_path`` (``uvicorn --root-path /proxy`` puts
    it in front of the requested path), as Starlette routes it."""
    path = scope.get("path")
    root_path = scope.get("root_path")
    if (
        root_path
        and isinstance(path, str)
        and isinstance(root_path, str)
        and path.startswith(root_path)
        and (len(path) == len(root_path) or path[len(root_path)] == "/")
    ):
        return path[len(root_path):] or "/"
    return path

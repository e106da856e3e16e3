"""The pure ASGI middleware.

It passes every message through unchanged; it only looks at them (with ``correlation_id=True``
it adds one header to ``http.response.start``, the one change it makes; see
:mod:`asgi_metrics.asgi_correlation`). A request is timed
from its arrival to the moment the app hands the last body message to the server, so a
streaming response is timed in full and work after the response (background tasks) is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from .asgi_correlation import answer_error, correlation_id_for, serve_uncounted
from .correlation import current_correlation_id, reset_correlation_id
from .correlation_ids import CORRELATION_ID_ATTRIBUTE as CORRELATION_ID_ATTRIBUTE  # re-export
from .correlation_ids import ID_BYTES, MAX_ID_LENGTH, CorrelationIds
from .endpoint import MetricsEndpoint
from .exemplars import AVAILABLE as OTEL_AVAILABLE
from .exemplars import SpanIds, current_span_ids, sampled_span
from .labels import CLIENT_CLOSED_STATUS, KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE
from .recorder import Recorder
from .request_ids import new_id, take_id
from .settings import ConfigurationError, Settings
from .span_link import link_span
from .starlette_routes import RouteTemplates
from .types import ASGIApp, Message, Receive, Scope, Send

# Bound once: per request, a call without the attribute lookup.
_set_correlation_id = current_correlation_id.set

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
        settings = self.settings
        self._correlation = CorrelationIds(settings) if settings.correlation_id else None
        self._exemplars = self.recorder.wants_exemplars
        # The span is read once, when the request is recorded, for both the exemplar and
        # the correlation ID span attribute: an OpenTelemetry middleware outside us has
        # its server span current then, as at the start.
        self._span_attribute = self._correlation is not None and OTEL_AVAILABLE
        self._store_only = self.recorder.otel is None
        self._excluded = settings.exclude_paths
        self._patterns = settings.exclude_patterns
        # Body sizes and the time to first byte cost per message: only measured when
        # one of their histograms is on.
        self._exchange_class: type[_Exchange] = (
            _MeasuringExchange
            if settings.time_to_first_byte or settings.request_size or settings.response_size
            else _Exchange
        )

    def _resolve(self, scope: Scope, root_path: str) -> str | None:
        assert self._route_resolver is not None
        return self._route_resolver(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path")
        root_path = scope.get("root_path")
        if root_path:
            path = _route_path(path, root_path)
        if path == self._metrics_path:
            await self.metrics_app(scope, receive, send)
            return
        recorder = self.recorder
        id_header: tuple[bytes, bytes] | None = None
        token = None
        exchange = None
        try:
            correlation = self._correlation
            if correlation is not None:
                # The common cases inline (a valid incoming ID from anyone, or none and a
                # new one): this runs on every request. The rest in correlation_id_for.
                raw = None
                name = correlation.header_bytes
                # ASGI servers hand header names over lower-cased: plain equality finds it.
                for key, value in scope.get("headers") or ():
                    if key == name:
                        raw = value
                        break
                if raw is None and not correlation.use_trace_id:
                    try:
                        cid = take_id()
                    except IndexError:
                        cid = new_id()
                    id_header = (name, cid.encode("ascii"))
                elif (
                    type(raw) is bytes
                    and correlation.plain
                    and 0 < len(raw) <= MAX_ID_LENGTH
                    # The built-in rule in C: letters and digits (bytes.isalnum() is
                    # ASCII-only), which hex IDs like ours are, else nothing outside ID_BYTES.
                    and (raw.isalnum() or not raw.translate(None, ID_BYTES))
                ):
                    cid = raw.decode("ascii")
                    id_header = (name, raw)
                else:
                    cid = correlation_id_for(scope, correlation, raw)
                    id_header = (name, cid.encode("ascii"))
                token = _set_correlation_id(cid)
            if isinstance(path, str) and path not in self._excluded and (
                not self._patterns or recorder.counts(path)
            ):
                start = perf_counter()
                raw_method = scope.get("method")
                # ``in`` raises for an unhashable method: caught below.
                method: str = raw_method if raw_method in KNOWN_METHODS else OTHER_METHOD
                if self._store_only:
                    # No OpenTelemetry instruments: straight to the store. A failure here
                    # is caught below, and the request is then served unmeasured.
                    recorder.store.start(method)
                    exchange = self._exchange_class(
                        self, scope, receive, send, method, start, True
                    )
                else:
                    scheme = scope.get("scheme") or "http"
                    exchange = self._exchange_class(
                        self, scope, receive, send, method, start,
                        recorder.start(method, scheme),
                    )
                    exchange.scheme = scheme
                exchange.id_header = id_header
        except Exception as exc:
            # Fail open: a request we cannot even start measuring is served as if we were
            # not there (unmeasured, no correlation header).
            recorder.failures.report("reading the request", exc)
            reset_correlation_id(token)
            await self.app(scope, receive, send)
            return
        if exchange is None:
            if id_header is None:
                await self.app(scope, receive, send)
            else:
                await serve_uncounted(
                    self.app, scope, receive, send, id_header, recorder.failures
                )
                reset_correlation_id(token)
            return

        try:
            await self.app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            if not exchange.done:
                exchange.finish(exchange.status or CLIENT_CLOSED_STATUS)
            raise
        except BaseException as exc:
            if not exchange.done:
                if not exchange.status and id_header is not None and isinstance(exc, Exception):
                    await answer_error(scope, send, id_header)
                exchange.finish(
                    exchange.status or (CLIENT_CLOSED_STATUS if exchange.disconnected else 500),
                    exc,
                )
            else:
                recorder.exception(method, exchange.route, exc)
            raise
        if not exchange.done:
            # The app returned without completing its response. With nothing started the
            # server answers 500 itself, unless the client had already gone.
            exchange.finish(
                exchange.status or (CLIENT_CLOSED_STATUS if exchange.disconnected else 500)
            )
        # Only on success: after an unhandled exception the ID stays set, so the outer
        # error handler and the server's error log line still see it (a request's context
        # ends with its task anyway).
        if token is not None:
            reset_correlation_id(token)


class _Exchange:
    """One request in progress: watches the messages going by, records the request once
    its response is complete."""

    __slots__ = (
        "_receive", "_send", "disconnected", "done", "id_header", "in_flight", "method",
        "middleware", "request_size", "response_size", "root_path", "route", "scheme",
        "scope", "start", "status", "trailers", "ttfb",
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
        self.scheme = "http"
        #: The correlation header to add to the response start, or None.
        self.id_header: tuple[bytes, bytes] | None = None

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    def send(self, message: Message) -> Awaitable[None]:
        # A plain function returning send's awaitable: one coroutine less per message.
        # The request is recorded as the app hands its last message to the server.
        kind = message["type"]
        if kind == "http.response.body":
            if not message.get("more_body") and not self.trailers and not self.done:
                return self._send_last(message)
        elif kind == "http.response.start":
            # A response started after the client went away reaches nobody (often
            # Starlette's 500 for ClientDisconnect): the client closed the request.
            self.status = (
                CLIENT_CLOSED_STATUS if self.disconnected else message.get("status", 0)
            )
            if message.get("trailers"):
                self.trailers = True
            header = self.id_header
            if header is not None:
                # with_header() inlined (once per request with correlation IDs): a copy
                # with the header added, unless the app set that header itself.
                headers = message.get("headers") or ()
                name = header[0]
                size = len(name)
                for key, _ in headers:
                    if len(key) == size and key.lower() == name:
                        break
                else:
                    # dict.copy(), the cheap clone, when it is a dict (it always is in
                    # practice; ASGI only asks for a mapping).
                    message = message.copy() if type(message) is dict else dict(message)
                    message["headers"] = [*headers, header]
        elif not self.done and (
            kind == "http.response.pathsend"
            or (kind == "http.response.zerocopysend" and not message.get("more_body"))
            or (kind == "http.response.trailers" and not message.get("more_trailers"))
        ):
            return self._send_last(message)
        return self._send(message)

    async def _send_last(self, message: Message) -> None:
        # The request's duration ends here, as the app hands its last message over, but it
        # is recorded only once the server has taken that message. Servers write the
        # response head and the body as each arrives: work done between the two writes
        # leaves the client with half a response, waiting (and woken once more) for the rest.
        end = perf_counter()
        middleware = self.middleware
        # The correlation ID span attribute goes on before the message is passed on:
        # OpenTelemetry's ASGI middleware, outside us, ends its server span once it has
        # sent the last message.
        exemplar = self._span_ids() if middleware._span_attribute else None
        try:
            await self._send(message)
        finally:
            if not self.done:
                if not middleware._span_attribute and middleware._exemplars:
                    # _span_ids() inlined for the common case: this runs on every request.
                    try:
                        exemplar = current_span_ids()
                    except Exception as failure:
                        middleware.recorder.failures.report("span lookup", failure)
                self._record(self.status, None, end, exemplar)

    def finish(self, status: int, exc: BaseException | None = None) -> None:
        """Record the request now: its response ended, or never will."""
        self._record(status, exc, perf_counter(), self._span_ids())

    def _span_ids(self) -> SpanIds | None:
        """The current sampled span's IDs for the exemplar, or None; with the correlation
        ID span attribute on, also sets that attribute on the span."""
        middleware = self.middleware
        # The span current now: an OpenTelemetry middleware's, outside us or inside.
        if middleware._span_attribute:
            try:
                span = sampled_span()
                if span is not None:
                    header = self.id_header
                    return link_span(
                        span,
                        None if header is None else header[1].decode("ascii"),
                        middleware._exemplars,
                        middleware.recorder.failures,
                    )
            except Exception as failure:
                middleware.recorder.failures.report("span lookup", failure)
        elif middleware._exemplars:
            try:
                return current_span_ids()
            except Exception as failure:
                middleware.recorder.failures.report("span lookup", failure)
        return None

    def _record(
        self, status: int, exc: BaseException | None, end: float, exemplar: SpanIds | None
    ) -> None:
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
            self.method, route, status, end - self.start, self.in_flight, exc,
            self.ttfb, self.request_size, self.response_size, exemplar, self.scheme,
        )


def _route_path(path: object, root_path: object) -> object:
    """The path without the server's ``root_path`` (``uvicorn --root-path /proxy`` puts
    it in front of the requested path), as Starlette routes it."""
    if (
        isinstance(path, str)
        and isinstance(root_path, str)
        and path.startswith(root_path)
        and (len(path) == len(root_path) or path[len(root_path)] == "/")
    ):
        return path[len(root_path):] or "/"
    return path


class _MeasuringExchange(_Exchange):
    """An :class:`_Exchange` that also measures body sizes and the time to first byte,
    for when one of those histograms is on."""

    __slots__ = ()

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request":
            body = message.get("body")
            if body:
                # A body without a length is the server's to reject, not ours.
                try:  # noqa: SIM105 (per body message: suppress() costs more)
                    self.request_size += len(body)
                except TypeError:
                    pass
        elif kind == "http.disconnect":
            self.disconnected = True
        return message

    def send(self, message: Message) -> Awaitable[None]:
        kind = message["type"]
        if kind == "http.response.body":
            body = message.get("body")
            if body:
                try:  # noqa: SIM105 (per body message: suppress() costs more)
                    self.response_size += len(body)
                except TypeError:
                    pass
        elif kind == "http.response.start":
            self.ttfb = perf_counter() - self.start
        return super().send(message)

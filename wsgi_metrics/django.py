"""Django: one middleware for WSGI and ASGI deployments.

``MIDDLEWARE = ["wsgi_metrics.django.MetricsMiddleware", ...]`` (first in the list) and,
optionally, ``HTTP_METRICS = {...}`` in the settings with the same keys as the WSGI/ASGI
middleware's keyword options.

The middleware is both sync- and async-capable, so Django calls it natively in either mode
(no thread hop under ASGI). Being first, it sees Django's final response: exceptions that
Django turns into responses (``Http404`` -> 404, ``PermissionDenied`` -> 403, ...) are
counted by their status. Unhandled ones (Django's 500) are counted once in the exceptions
counter too: Django announces them with its ``got_request_exception`` signal, which is
sent exactly for exceptions nothing handled, whichever middleware or view raised them.

With ``correlation_id=True`` the ID is set (:func:`~asgi_metrics.get_correlation_id`) before
the rest of the chain runs and put on the response as it passes back, Django's own 404 and
500 responses included (Django turns exceptions into responses inside the chain). It is
reset when the response is handed back, or, for a streaming response, when the server
closes it, so the generator sees it while it is consumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from time import perf_counter
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core.signals import got_request_exception  # type: ignore[import-untyped]
from django.http import (  # type: ignore[import-untyped]
    HttpRequest,
    HttpResponse,
    RawPostDataException,
)

from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS, UNMATCHED_ROUTE, method_label
from asgi_metrics.core.rules import declared_length, path_filter
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.correlation.context import current_correlation_id, reset_correlation_id
from asgi_metrics.correlation.ids import CorrelationIds
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE
from asgi_metrics.otel.spans import SpanIds, read_span
from asgi_metrics.wiring import Parts, build

#: The Django setting read for the options.
SETTING = "HTTP_METRICS"
# The attribute an unhandled exception is remembered in on the request.
_EXCEPTION_ATTR = "_http_metrics_exception"

_lock = threading.Lock()
_shared: tuple[Settings, Parts] | None = None


def shared_parts() -> Parts:
    """The process's recorder, store and exposition (:class:`~asgi_metrics.wiring.Parts`)
    for the current settings.

    Django builds its middleware chain once per handler, and the test client or a
    management command may build several handlers in one process: they all share one
    store. Changed settings (``override_settings`` in tests) build a new one, which
    replaces the old one in the registry.
    """
    global _shared
    options = getattr(django_settings, SETTING, None) or {}
    if not isinstance(options, Mapping):
        raise ConfigurationError(
            f"settings.{SETTING}: expected a dict of settings, got {options!r}"
        )
    settings = Settings.build(options)
    with _lock:
        if _shared is None or _shared[0] != settings:
            _shared = (settings, build(settings))
        return _shared[1]


def route_template(request: HttpRequest) -> str:
    """The full route of the URL pattern Django matched, across ``include()`` prefixes,
    with a leading slash (``/api/items/<int:pk>/``); :data:`UNMATCHED_ROUTE` when nothing
    matched. ``re_path`` patterns give their regular expression without the ``^``/``$``
    anchors (``/api/items/(?P<pk>[0-9]+)/``)."""
    match = getattr(request, "resolver_match", None)
    route = getattr(match, "route", None)
    if not isinstance(route, str):
        return UNMATCHED_ROUTE
    # Django joins the patterns' strings and drops the "^" of every part but the first.
    route = route.removeprefix("^")
    if route.endswith("\\Z"):
        route = route[:-2]
    elif route.endswith("$"):
        route = route[:-1]
    return "/" + route


def _remember_exception(sender: object, request: HttpRequest | None = None, **extra: Any) -> None:
    # Sent inside Django's except block (asgiref re-raises it in the worker thread under
    # ASGI), so sys.exc_info() is the exception Django is about to turn into a 500.
    del sender, extra
    if request is not None:
        setattr(request, _EXCEPTION_ATTR, sys.exc_info()[1])


got_request_exception.connect(_remember_exception, dispatch_uid="wsgi_metrics.django")


class _BodyReads:
    """Watches a request's ``read``/``readline`` (which ``body``, ``POST``/``FILES``,
    iteration and ``readlines`` all go through) for a request without ``Content-Length``.

    Installed as instance attributes on the request, only when ``request_size`` is on and
    no size is declared; each calls Django's own method and returns its result unchanged.
    It answers whether the app read the body, without reading it ourselves, and how many
    bytes a streamed read (``request.read()``, a multipart upload) took.
    """

    __slots__ = ("count", "read", "readline", "started")

    def __init__(self, request: HttpRequest) -> None:
        self.started = False
        self.count = 0
        read, readline = request.read, request.readline

        def counted_read(*args: Any, **kwargs: Any) -> Any:
            self.started = True
            data = read(*args, **kwargs)
            self._add(data)
            return data

        def counted_readline(*args: Any, **kwargs: Any) -> Any:
            self.started = True
            line = readline(*args, **kwargs)
            self._add(line)
            return line

        self.read = counted_read
        self.readline = counted_readline
        request.read = counted_read
        request.readline = counted_readline

    def _add(self, data: Any) -> None:
        with contextlib.suppress(TypeError):
            self.count += len(data)

    def size(self, request: HttpRequest) -> int:
        """The bytes the app read, and take the watchers off the request (they keep it
        alive through a reference cycle otherwise)."""
        for name in ("read", "readline"):
            if vars(request).get(name) is getattr(self, name):
                delattr(request, name)
        if not self.started:
            return 0  # never read: request.body would read it now, which is not ours to do
        try:
            # Read through request.body: it is cached, and the count could have seen its
            # bytes twice (request.read() after request.body replays them).
            return len(request.body)
        except RawPostDataException:  # read as a stream (request.read(), multipart)
            return self.count
        except Exception:  # a body Django refused (too big): what the app got of it
            return self.count


class _Pending:
    """One counted request in progress (what ``_finish`` needs besides the request)."""

    __slots__ = ("body_reads", "in_flight", "method", "request_size", "scheme", "span_ids",
                 "start")

    def __init__(self, method: str, scheme: str, in_flight: bool, start: float) -> None:
        self.method = method
        self.scheme = scheme
        self.in_flight = in_flight
        self.start = start
        self.span_ids: SpanIds | None = None
        #: The size ``Content-Length`` declared; else the app's reads are watched.
        self.request_size: int | None = None
        self.body_reads: _BodyReads | None = None


class _Stream:
    """A streaming response not recorded yet: recorded once, when the server (or Django's
    test client, at the end of the content) closes it, or when it is collected if nothing
    ever does (a test that drops it unread).

    Its ``close`` replaces the response's, and it holds the response's own: a cycle, but
    the finalizer is this object's ``__del__``, which the collector runs with the cycle's
    other objects (a ``weakref.finalize`` holding any of them would never run).
    """

    __slots__ = (
        "middleware", "pending", "recorded", "request", "response_close", "status", "token",
        "ttfb",
    )

    def __init__(
        self,
        middleware: MetricsMiddleware,
        request: HttpRequest,
        response_close: Callable[[], None],
        pending: _Pending | None,
        status: int,
        token: Token[str | None] | None,
        ttfb: float | None,
    ) -> None:
        self.middleware = middleware
        self.request = request
        self.response_close = response_close
        self.pending = pending
        self.status = status
        self.token = token
        self.ttfb = ttfb
        self.recorded = False

    def close(self) -> None:
        """The response's ``close()``: close it, record the request, reset the ID."""
        try:
            self.response_close()
        finally:
            # Once each: Django's test clients close a streaming response themselves, and
            # a server may close it again.
            self._record()
            token = self.token
            if token is not None:
                self.token = None
                reset_correlation_id(token)

    def _record(self) -> None:
        if not self.recorded:
            self.recorded = True
            pending = self.pending
            if pending is not None:
                self.middleware._finish(self.request, pending, self.status, ttfb=self.ttfb)

    def __del__(self) -> None:
        # Collected without being closed: the request still has to leave the in-flight
        # gauge. Timed to now (the middleware does not see the iteration). As in the WSGI
        # middleware, the correlation ID is not reset here: the collector may run in any
        # thread, or after this thread's next request set its own ID.
        if not self.recorded:
            try:
                self._record()
            except Exception as failure:
                self.middleware.recorder.failures.report("recording a request", failure)


class MetricsMiddleware:
    """Counts and times every request Django serves, and serves ``/metrics``.

    Put it first in ``MIDDLEWARE``. Non-streaming responses are recorded when Django hands
    the response back; streaming responses (``StreamingHttpResponse``, ``FileResponse``)
    when the server closes them after the last chunk, under WSGI and ASGI alike, or when
    they are garbage-collected if nothing ever closes them.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        parts = shared_parts()
        self.recorder = parts.recorder
        self.exposition = parts.exposition
        self._counts = path_filter(parts.settings)
        settings = self.recorder.settings
        self._metrics_path = settings.metrics_path
        self._correlation = CorrelationIds(settings) if settings.correlation_id else None
        self._header = settings.correlation_header
        self._exemplars = parts.exemplars
        # As in the ASGI middleware: the span is read once, when the response (or the
        # exception) passes back through us, for the exemplar and the span attribute.
        self._span_attribute = self._correlation is not None and OTEL_AVAILABLE
        self._span_lookup = self._exemplars or self._span_attribute
        self._async = iscoroutinefunction(get_response)
        if self._async:
            # Django looks at this to call us natively in async mode, without adapting.
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self.__acall__(request)
        path = request.path_info
        if path == self._metrics_path:
            return self._metrics_response(request)
        counted = self._counts(path)
        if not counted and self._correlation is None:
            return self.get_response(request)
        pending, token, cid = self._begin(request, counted)
        try:
            response = self.get_response(request)
        except BaseException as exc:  # DEBUG_PROPAGATE_EXCEPTIONS, or a server-level error
            self._observe_span(pending, cid)  # raised through us: still inside the span
            if pending is not None:
                self._finish(request, pending, 500, exc)
            reset_correlation_id(token)
            raise
        self._response(request, response, pending, token, cid)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        """The async path: the same as ``__call__``, awaiting the rest of the chain."""
        path = request.path_info
        if path == self._metrics_path:
            loop = asyncio.get_running_loop()
            # Rendering a large registry must not stall the event loop.
            return await loop.run_in_executor(None, self._metrics_response, request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        counted = self._counts(path)
        if not counted and self._correlation is None:
            return await get_response(request)
        pending, token, cid = self._begin(request, counted)
        try:
            response = await get_response(request)
        except BaseException as exc:
            self._observe_span(pending, cid)  # raised through us: still inside the span
            if pending is not None:
                cancelled = isinstance(exc, asyncio.CancelledError)  # the client went away
                status = CLIENT_CLOSED_STATUS if cancelled else 500
                self._finish(request, pending, status, exc)
            reset_correlation_id(token)
            raise
        self._response(request, response, pending, token, cid)
        return response

    def _begin(
        self, request: HttpRequest, counted: bool
    ) -> tuple[_Pending | None, Token[str | None] | None, str | None]:
        """Start a request: counted in flight (if ``counted``), its correlation ID set."""
        pending = None
        if counted:
            method = method_label(request.method)
            # request.scheme reads settings (SECURE_PROXY_SSL_HEADER): only when used.
            scheme = request.scheme if self.recorder.otel is not None else "http"
            pending = _Pending(
                method, scheme, self.recorder.start(method, scheme), perf_counter()
            )
            if self.recorder.wants_request_size:
                pending.request_size = declared_length(request.META.get("CONTENT_LENGTH"))
                if pending.request_size is None:
                    try:
                        pending.body_reads = _BodyReads(request)
                    except Exception as failure:
                        self.recorder.failures.report("watching the request body", failure)
        correlation = self._correlation
        if correlation is None:
            return pending, None, None
        meta = request.META
        cid = correlation.for_request(
            meta.get(correlation.environ_key), meta.get("REMOTE_ADDR")
        )
        return pending, current_correlation_id.set(cid), cid

    def _observe_span(self, pending: _Pending | None, cid: str | None) -> None:
        """Read the current sampled span once: its IDs become the exemplar, and it gets
        the correlation ID as an attribute (when each is on)."""
        if not self._span_lookup or (pending is not None and pending.span_ids is not None):
            return
        ids = read_span(
            cid if self._span_attribute else None,
            self._exemplars and pending is not None,
            self.recorder.failures,
        )
        if pending is not None:
            pending.span_ids = ids

    def _response(
        self,
        request: HttpRequest,
        response: Any,
        pending: _Pending | None,
        token: Token[str | None] | None,
        cid: str | None,
    ) -> None:
        if cid is not None:
            try:
                if not response.has_header(self._header):  # the app's own value wins
                    response[self._header] = cid
            except Exception as failure:
                self.recorder.failures.report("setting the correlation header", failure)
        # Read now, while the server span (OpenTelemetry's middleware or instrumentation
        # outside us) is current; a streaming response is closed in another context.
        self._observe_span(pending, cid)
        status = getattr(response, "status_code", 0)
        if not getattr(response, "streaming", False):
            if pending is not None:
                size = len(response.content) if self.recorder.wants_response_size else None
                self._finish(request, pending, status, response_size=size)
            reset_correlation_id(token)
            return
        # Streamed after we return: record when the server closes the response (Django's
        # WSGI and ASGI handlers both call close() after the last chunk; under WSGI a
        # FileResponse handed to wsgi.file_wrapper gets this close() too). The correlation
        # ID stays set until then, so the generator sees it.
        ttfb = None if pending is None else perf_counter() - pending.start
        try:
            stream = _Stream(self, request, response.close, pending, status, token, ttfb)
            response.close = stream.close
        except Exception as failure:
            self.recorder.failures.report("observing a streaming response", failure)
            if pending is not None:
                self._finish(request, pending, status)
            reset_correlation_id(token)

    def _finish(
        self,
        request: HttpRequest,
        pending: _Pending,
        status: int,
        exc: BaseException | None = None,
        response_size: int | None = None,
        ttfb: float | None = None,
    ) -> None:
        duration = perf_counter() - pending.start
        try:
            route = route_template(request)
        except Exception as failure:
            self.recorder.failures.report("route lookup", failure)
            route = UNMATCHED_ROUTE
        if exc is None:
            # Only an exception Django announced as unhandled counts, and only with the
            # 500 it became (a custom handler500 may have raised again: still one count).
            remembered = getattr(request, _EXCEPTION_ATTR, None)
            if isinstance(remembered, BaseException) and status >= 500:
                exc = remembered
        request_size = pending.request_size
        if request_size is None and self.recorder.wants_request_size:
            request_size = 0
            reads = pending.body_reads
            if reads is not None:
                try:
                    request_size = reads.size(request)
                except Exception as failure:
                    self.recorder.failures.report("measuring the request body", failure)
        exemplar = pending.span_ids
        # A non-streaming response is handed over whole: its first byte is its last one,
        # as far as the middleware can tell. Streamed bytes are not counted.
        self.recorder.finish(
            pending.method, route, status, duration, in_flight=pending.in_flight, exc=exc,
            ttfb=duration if ttfb is None else ttfb,
            request_size=request_size, response_size=response_size,
            exemplar=exemplar, scheme=pending.scheme,
        )

    def _metrics_response(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        status, headers, body = self.exposition.respond(
            request.method,
            meta.get("HTTP_ACCEPT"),
            meta.get("HTTP_ACCEPT_ENCODING"),
            meta.get("HTTP_AUTHORIZATION"),
        )
        response = HttpResponse(b"" if request.method == "HEAD" else body, status=status)
        for name, value in headers:
            if name == "WWW-Authenticate" and name in response:
                # Django keeps one value per header: two challenges (bearer and basic)
                # share one WWW-Authenticate, comma-separated as RFC 9110 allows.
                value = f"{response[name]}, {value}"
            response[name] = value  # Content-Length included: HEAD keeps the GET length
        return response

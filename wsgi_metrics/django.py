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
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from time import perf_counter
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core.exceptions import MiddlewareNotUsed  # type: ignore[import-untyped]
from django.core.signals import got_request_exception  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]

from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS, method_labels
from asgi_metrics.core.request_labels import open_assignments
from asgi_metrics.core.rules import path_filter
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.correlation.context import current_correlation_id, reset_correlation_id
from asgi_metrics.correlation.ids import CorrelationIds
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE
from asgi_metrics.otel.spans import read_span
from asgi_metrics.wiring import Parts, build
from wsgi_metrics.django_request import EXCEPTION_ATTR, Pending, Stream, route_template
from wsgi_metrics.labels import DjangoHeaders

__all__ = ["SETTING", "MetricsMiddleware", "route_template", "shared_parts"]

#: The Django setting read for the options.
SETTING = "HTTP_METRICS"

_lock = threading.Lock()
_shared: tuple[Settings, Parts | None] | None = None
#: (pending request or None, correlation token or None, correlation ID or None)
_Begun = tuple["Pending | None", "Token[str | None] | None", "str | None"]


def shared_parts() -> Parts | None:
    """The process's recorder, store and exposition (:class:`~asgi_metrics.wiring.Parts`)
    for the current settings; ``None`` when they say ``enabled=False``.

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
            _shared = (settings, build(settings) if settings.enabled else None)
        return _shared[1]


def _remember_exception(sender: object, request: HttpRequest | None = None, **extra: Any) -> None:
    # Sent inside Django's except block (asgiref re-raises it in the worker thread under
    # ASGI), so sys.exc_info() is the exception Django is about to turn into a 500.
    del sender, extra
    if request is not None:
        setattr(request, EXCEPTION_ATTR, sys.exc_info()[1])


got_request_exception.connect(_remember_exception, dispatch_uid="wsgi_metrics.django")


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
        if parts is None:  # enabled=False: Django leaves us out of the chain
            raise MiddlewareNotUsed("HTTP metrics are disabled (setting 'enabled')")
        self.recorder = parts.recorder
        self.exposition = parts.exposition
        settings = parts.settings
        self._counts = path_filter(settings)
        self._methods = method_labels(settings.exclude_methods)
        # Shared like the store by every handler's middleware: each label keeps
        # max_label_values values per store, not per handler (the test client builds a
        # handler per Client()).
        self._labels = parts.request_labels(DjangoHeaders())
        self._metrics_path = settings.metrics_path
        self._correlation = CorrelationIds(settings) if settings.correlation_id else None
        self._header = settings.correlation_header
        self._exemplars = parts.exemplars
        # As in the ASGI middleware: the span is read once, when the response (or the
        # exception) passes back through us, for the exemplar and the span attribute.
        self._span_attribute = self._correlation is not None and OTEL_AVAILABLE
        self._span_reads = self._exemplars or self._span_attribute
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
        counted = self._counts(path) and self._methods(request.method) is not None
        if not counted and self._labels is not None:
            # Its set_label calls go to a dict nobody reads, not to the assignments still
            # current from an earlier request whose streaming response is not closed yet
            # (the test client's), which would be recorded with them.
            open_assignments()
        if not counted and self._correlation is None:
            return self.get_response(request)
        pending, token, cid = self._begin(request, counted)
        try:
            response = self.get_response(request)
        except BaseException as exc:  # DEBUG_PROPAGATE_EXCEPTIONS, or a server-level error
            self._failed(pending, token, cid, 500, exc)
            raise
        self._response(response, pending, token, cid)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        """The async path: the same as ``__call__``, awaiting the rest of the chain."""
        path = request.path_info
        if path == self._metrics_path:
            loop = asyncio.get_running_loop()
            # Rendering a large registry must not stall the event loop.
            return await loop.run_in_executor(None, self._metrics_response, request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        counted = self._counts(path) and self._methods(request.method) is not None
        if not counted and self._labels is not None:
            open_assignments()  # as in __call__
        if not counted and self._correlation is None:
            return await get_response(request)
        pending, token, cid = self._begin(request, counted)
        try:
            response = await get_response(request)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)  # the client went away
            self._failed(pending, token, cid, CLIENT_CLOSED_STATUS if cancelled else 500, exc)
            raise
        self._response(response, pending, token, cid)
        return response

    def _begin(self, request: HttpRequest, counted: bool) -> _Begun:
        """Start a request: counted in flight (if ``counted``), its correlation ID set."""
        pending = None
        if counted:
            # request.scheme reads settings (SECURE_PROXY_SSL_HEADER): only when used.
            scheme = request.scheme if self.recorder.otel is not None else "http"
            method = self._methods(request.method)
            assert method is not None  # excluded methods are not counted
            pending = Pending(self.recorder, request, method, scheme, self._labels)
            if self._labels is not None:
                pending.assigned, pending.assignments = open_assignments()
        correlation = self._correlation
        if correlation is None:
            return pending, None, None
        meta = request.META
        cid = correlation.for_request(
            meta.get(correlation.environ_key), meta.get("REMOTE_ADDR")
        )
        return pending, current_correlation_id.set(cid), cid

    def _failed(
        self,
        pending: Pending | None,
        token: Token[str | None] | None,
        cid: str | None,
        status: int,
        exc: BaseException,
    ) -> None:
        """The chain raised through us: recorded while still inside the span."""
        self._read_span(pending, cid)
        if pending is not None:
            pending.finish(status, exc)
            pending.forget_assignments()
        reset_correlation_id(token)

    def _read_span(self, pending: Pending | None, cid: str | None) -> None:
        """Read the current sampled span once: its IDs become the exemplar, and it gets
        the correlation ID as an attribute (when each is on)."""
        if not self._span_reads or (pending is not None and pending.span_ids is not None):
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
        response: Any,
        pending: Pending | None,
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
        self._read_span(pending, cid)
        status = getattr(response, "status_code", 0)
        if getattr(response, "streaming", False):
            self._observe_stream(response, pending, token, status)
            return
        if pending is not None:
            size = len(response.content) if self.recorder.wants_response_size else None
            pending.finish(status, response_size=size, response=response)
            pending.forget_assignments()
        reset_correlation_id(token)

    def _observe_stream(
        self,
        response: Any,
        pending: Pending | None,
        token: Token[str | None] | None,
        status: int,
    ) -> None:
        """Streamed after we return: record when the server closes the response (Django's
        WSGI and ASGI handlers both call close() after the last chunk; under WSGI a
        FileResponse handed to wsgi.file_wrapper gets this close() too). The correlation
        ID stays set until then, so the generator sees it."""
        ttfb = None if pending is None else perf_counter() - pending.start
        try:
            stream = Stream(
                self.recorder.failures, response.close, pending, status, token, ttfb, response
            )
            response.close = stream.close
        except Exception as failure:
            self.recorder.failures.report("observing a streaming response", failure)
            if pending is not None:
                pending.finish(status, response=response)
                pending.forget_assignments()
            reset_correlation_id(token)

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

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
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_settings  # type: ignore[import-untyped]
from django.core.signals import got_request_exception  # type: ignore[import-untyped]
from django.http import HttpRequest, HttpResponse  # type: ignore[import-untyped]

from asgi_metrics.labels import CLIENT_CLOSED_STATUS, UNMATCHED_ROUTE, method_label
from asgi_metrics.recorder import Recorder
from asgi_metrics.settings import ConfigurationError, Settings

#: The Django setting read for the options.
SETTING = "HTTP_METRICS"
# The attribute an unhandled exception is remembered in on the request.
_EXCEPTION_ATTR = "_http_metrics_exception"

_lock = threading.Lock()
_shared: tuple[Settings, Recorder] | None = None


def recorder() -> Recorder:
    """The process's :class:`~asgi_metrics.recorder.Recorder` for the current settings.

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
            _shared = (settings, Recorder(settings))
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


class MetricsMiddleware:
    """Counts and times every request Django serves, and serves ``/metrics``.

    Put it first in ``MIDDLEWARE``. Non-streaming responses are recorded when Django hands
    the response back; streaming responses (``StreamingHttpResponse``, ``FileResponse``)
    when the server closes them after the last chunk, under WSGI and ASGI alike.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.recorder = recorder()
        self._metrics_path = self.recorder.settings.metrics_path
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
        if not self.recorder.counts(path):
            return self.get_response(request)
        start = perf_counter()
        method = method_label(request.method)
        in_flight = self.recorder.start(method)
        try:
            response = self.get_response(request)
        except BaseException as exc:  # DEBUG_PROPAGATE_EXCEPTIONS, or a server-level error
            self._finish(request, method, 500, start, in_flight, exc)
            raise
        self._response(request, response, method, start, in_flight)
        return response

    async def __acall__(self, request: HttpRequest) -> Any:
        """The async path: the same as ``__call__``, awaiting the rest of the chain."""
        path = request.path_info
        if path == self._metrics_path:
            loop = asyncio.get_running_loop()
            # Rendering a large registry must not stall the event loop.
            return await loop.run_in_executor(None, self._metrics_response, request)
        get_response: Callable[[HttpRequest], Awaitable[Any]] = self.get_response
        if not self.recorder.counts(path):
            return await get_response(request)
        start = perf_counter()
        method = method_label(request.method)
        in_flight = self.recorder.start(method)
        try:
            response = await get_response(request)
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)  # the client went away
            status = CLIENT_CLOSED_STATUS if cancelled else 500
            self._finish(request, method, status, start, in_flight, exc)
            raise
        self._response(request, response, method, start, in_flight)
        return response

    def _response(
        self, request: HttpRequest, response: Any, method: str, start: float, in_flight: bool
    ) -> None:
        status = getattr(response, "status_code", 0)
        if not getattr(response, "streaming", False):
            size = len(response.content) if self.recorder.wants_response_size else None
            self._finish(request, method, status, start, in_flight, response_size=size)
            return
        # Streamed after we return: record when the server closes the response (Django's
        # WSGI and ASGI handlers both call close() after the last chunk; under WSGI a
        # FileResponse handed to wsgi.file_wrapper gets this close() too).
        ttfb = perf_counter() - start  # handed to the server, which starts sending
        try:
            close = response.close

            def close_and_record() -> None:
                try:
                    close()
                finally:
                    self._finish(request, method, status, start, in_flight, ttfb=ttfb)

            response.close = close_and_record
        except Exception as failure:
            self.recorder.failures.report("observing a streaming response", failure)
            self._finish(request, method, status, start, in_flight)

    def _finish(
        self,
        request: HttpRequest,
        method: str,
        status: int,
        start: float,
        in_flight: bool,
        exc: BaseException | None = None,
        response_size: int | None = None,
        ttfb: float | None = None,
    ) -> None:
        duration = perf_counter() - start
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
        try:
            request_size = max(int(request.META.get("CONTENT_LENGTH") or 0), 0)
        except ValueError:
            request_size = 0
        # A non-streaming response is handed over whole: its first byte is its last one,
        # as far as the middleware can tell. Streamed bytes are not counted.
        self.recorder.finish(
            method, route, status, duration, in_flight=in_flight, exc=exc,
            ttfb=duration if ttfb is None else ttfb,
            request_size=request_size, response_size=response_size,
        )

    def _metrics_response(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        status, headers, body = self.recorder.exposition.respond(
            request.method, meta.get("HTTP_ACCEPT"), meta.get("HTTP_ACCEPT_ENCODING")
        )
        response = HttpResponse(b"" if request.method == "HEAD" else body, status=status)
        for name, value in headers:
            response[name] = value  # Content-Length included: HEAD keeps the GET length
        return response

"""One request through the Django middleware: its state, the watch on its body, and the
observer of a streaming response."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextvars import Token
from time import perf_counter
from typing import Any

from django.http import HttpRequest, RawPostDataException  # type: ignore[import-untyped]

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.labels import UNMATCHED_ROUTE
from asgi_metrics.core.recorder import Recorder
from asgi_metrics.core.rules import declared_length, route_or_unmatched
from asgi_metrics.correlation.context import reset_correlation_id
from asgi_metrics.otel.spans import SpanIds

#: The attribute an unhandled exception is remembered in on the request.
EXCEPTION_ATTR = "_http_metrics_exception"


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


class Pending:
    """One counted request in progress: what recording it needs besides the response."""

    __slots__ = ("body_reads", "in_flight", "method", "recorder", "request", "request_size",
                 "scheme", "span_ids", "start")

    def __init__(
        self, recorder: Recorder, request: HttpRequest, method: str, scheme: str
    ) -> None:
        self.start = perf_counter()
        self.recorder = recorder
        self.request = request
        self.method = method
        self.scheme = scheme
        self.in_flight = recorder.start(method, scheme)
        self.span_ids: SpanIds | None = None
        #: The size ``Content-Length`` declared; else the app's reads are watched.
        self.request_size: int | None = None
        self.body_reads: BodyReads | None = None
        if recorder.wants_request_size:
            self.request_size = declared_length(request.META.get("CONTENT_LENGTH"))
            if self.request_size is None:
                try:
                    self.body_reads = BodyReads(request)
                except Exception as failure:
                    recorder.failures.report("watching the request body", failure)

    def finish(
        self,
        status: int,
        exc: BaseException | None = None,
        response_size: int | None = None,
        ttfb: float | None = None,
    ) -> None:
        """Record the request."""
        duration = perf_counter() - self.start
        recorder = self.recorder
        route = route_or_unmatched(recorder.failures, route_template, self.request)
        # A non-streaming response is handed over whole: its first byte is its last one,
        # as far as the middleware can tell. Streamed bytes are not counted.
        recorder.finish(
            self.method, route, status, duration, self.in_flight,
            self._unhandled(status) if exc is None else exc,
            duration if ttfb is None else ttfb,
            self._request_size(), response_size, self.span_ids, self.scheme,
        )

    def _unhandled(self, status: int) -> BaseException | None:
        # Only an exception Django announced as unhandled counts, and only with the 500 it
        # became (a custom handler500 may have raised again: still one count).
        remembered = getattr(self.request, EXCEPTION_ATTR, None)
        if isinstance(remembered, BaseException) and status >= 500:
            return remembered
        return None

    def _request_size(self) -> int | None:
        if self.request_size is not None or not self.recorder.wants_request_size:
            return self.request_size
        reads = self.body_reads
        if reads is None:
            return 0
        try:
            return reads.size(self.request)
        except Exception as failure:
            self.recorder.failures.report("measuring the request body", failure)
            return 0


class BodyReads:
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


class Stream:
    """A streaming response not recorded yet: recorded once, when the server (or Django's
    test client, at the end of the content) closes it, or when it is collected if nothing
    ever does (a test that drops it unread).

    Its ``close`` replaces the response's, and it holds the response's own: a cycle, but
    the finalizer is this object's ``__del__``, which the collector runs with the cycle's
    other objects (a ``weakref.finalize`` holding any of them would never run).
    """

    __slots__ = (
        "failures", "pending", "recorded", "response_close", "status", "token", "ttfb",
    )

    def __init__(
        self,
        failures: FailureLog,
        response_close: Callable[[], None],
        pending: Pending | None,
        status: int,
        token: Token[str | None] | None,
        ttfb: float | None,
    ) -> None:
        self.failures = failures
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
                pending.finish(self.status, ttfb=self.ttfb)

    def __del__(self) -> None:
        # Collected without being closed: the request still has to leave the in-flight
        # gauge. Timed to now (the middleware does not see the iteration). As in the WSGI
        # middleware, the correlation ID is not reset here: the collector may run in any
        # thread, or after this thread's next request set its own ID.
        if not self.recorded:
            try:
                self._record()
            except Exception as failure:
                self.failures.report("recording a request", failure)

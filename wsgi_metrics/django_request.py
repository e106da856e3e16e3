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
from asgi_metrics.core.labels import UNMATCHED_ROUTE, UNTRACKED_ROUTE
from asgi_metrics.core.recorder import Recorder
from asgi_metrics.core.request_labels import RequestLabels, close_assignments
from asgi_metrics.core.rules import declared_length, route_or_unmatched
from asgi_metrics.core.tracking import untracked
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


# id(view) -> (view, marked): each view is looked at once, when first matched.
_marked: dict[int, tuple[object, bool]] = {}


def tracked_route(request: HttpRequest) -> str:
    """:func:`route_template`, or the untracked route when the matched view (function or
    class-based) is marked with ``do_not_track``."""
    view = getattr(getattr(request, "resolver_match", None), "func", None)
    if view is not None:
        known = _marked.get(id(view))
        if known is None or known[0] is not view:
            if len(_marked) > 10_000:  # views come and go only in test suites
                _marked.clear()
            known = _marked[id(view)] = (view, untracked(view))
        if known[1]:
            return UNTRACKED_ROUTE
    return route_template(request)


class Pending:
    """One counted request in progress: what recording it needs besides the response."""

    __slots__ = ("assigned", "assignments", "body_reads", "in_flight", "labels", "method",
                 "recorder", "request", "request_size", "scheme", "span_ids", "start")

    def __init__(
        self,
        recorder: Recorder,
        request: HttpRequest,
        method: str,
        scheme: str,
        labels: RequestLabels | None = None,
    ) -> None:
        self.start = perf_counter()
        self.recorder = recorder
        self.request = request
        self.method = method
        self.scheme = scheme
        self.labels = labels
        #: With labels: the request's set_label values and the token to forget them with.
        self.assigned: dict[str, object] | None = None
        self.assignments: Any = None
        self.in_flight = recorder.start(method, scheme, self)
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

    def in_flight_route(self) -> str | None:
        """The route Django resolved so far (``in_flight_by_route``)."""
        return tracked_route(self.request)

    def finish(
        self,
        status: int,
        exc: BaseException | None = None,
        response_size: int | None = None,
        ttfb: float | None = None,
        response: Any = None,
    ) -> None:
        """Record the request (``response``: the one Django answered with, if any)."""
        duration = perf_counter() - self.start
        recorder = self.recorder
        route = route_or_unmatched(recorder.failures, tracked_route, self.request)
        labels = self.labels
        values = () if labels is None or not recorder.records(route) else labels.values(
            self.request, response, self.method, route, status, self.assigned
        )
        # A non-streaming response is handed over whole: its first byte is its last one,
        # as far as the middleware can tell. Streamed bytes are not counted.
        recorder.finish(
            self.method, route, status, duration, self.in_flight,
            self._unhandled(status) if exc is None else exc,
            duration if ttfb is None else ttfb,
            self._request_size(), response_size, self.span_ids, self.scheme, values,
        )

    def forget_assignments(self) -> None:
        """Forget the set_label values: the request is over."""
        if self.assignments is not None:
            close_assignments(self.assignments)
            self.assignments = None

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
        "failures", "pending", "recorded", "response", "response_close", "status", "token",
        "ttfb",
    )

    def __init__(
        self,
        failures: FailureLog,
        response_close: Callable[[], None],
        pending: Pending | None,
        status: int,
        token: Token[str | None] | None,
        ttfb: float | None,
        response: Any = None,
    ) -> None:
        self.failures = failures
        self.response = response  # for response-header labels (already in a cycle with us)
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
            if self.pending is not None:
                self.pending.forget_assignments()

    def _record(self) -> None:
        if not self.recorded:
            self.recorded = True
            pending = self.pending
            if pending is not None:
                pending.finish(self.status, ttfb=self.ttfb, response=self.response)

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

"""How one request is recorded: the one place every adapter hands its plain values to.

An adapter (ASGI, WSGI, Django) turns a request into plain values (method label, route
template, status, timings) and calls :meth:`Recorder.start` when it arrives and
:meth:`Recorder.finish` when its response is complete. Nothing here knows about any
framework, about exposition or about where the store keeps its numbers.

What a configuration records is decided once, here, when the recorder is built: ``start``
and ``finish`` are bound to the variant that does exactly that (no per-request branch for
an option that is off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.in_flight import InFlightRequest, InFlightRequests
from asgi_metrics.core.labels import (
    OTHER_STATUS,
    UNMATCHED_ROUTE,
    UNTRACKED_ROUTE,
    Key,
    status_labels,
)
from asgi_metrics.core.naming import MetricNames
from asgi_metrics.core.settings import Settings

#: (trace_id, span_id) of the sampled span a request was served in.
SpanIds = tuple[int, int]


class Store(Protocol):
    """What the recorder needs of a store (single-process or multiprocess)."""

    def start(self, method: str) -> None: ...

    def end(self, method: str) -> None: ...

    def observe(
        self, key: Key, duration: float, ended: str | None = None,
        exemplar: SpanIds | None = None,
    ) -> object: ...

    def observe_extra(
        self, key: Key, ttfb: float | None, request_size: int | None,
        response_size: int | None,
    ) -> None: ...

    def count_exception(self, key: Key) -> None: ...


class Bridge(Protocol):
    """A second destination for the same requests (the OpenTelemetry metrics bridge)."""

    def start(self, method: str, scheme: str) -> None: ...

    def finish(
        self, method: str, scheme: str, route: str, status: int, duration: float,
        exc: BaseException | None,
    ) -> None: ...


class Recorder:
    """Records requests into one store (and a bridge, when configured).

    Every method is fail-open: a failure is logged (rate-limited) and swallowed, so
    recording can never break a request.

    A request whose route is :data:`~asgi_metrics.core.labels.UNTRACKED_ROUTE`
    (``do_not_track``), or ``__unmatched__`` with ``count_unmatched=False``, only leaves
    the in-flight gauge.
    """

    #: ``start(method, scheme, request) -> in_flight``: a request arrived; returns what to
    #: pass on to ``finish`` as ``in_flight`` (falsy when it was not counted in flight, so
    #: the gauge only goes down for what went up). ``request`` is the adapter's
    #: :class:`~asgi_metrics.core.in_flight.InFlightRequest` (used with
    #: ``in_flight_by_route``).
    start: Callable[..., object]
    #: ``finish(method, route, status, duration, in_flight, exc, ttfb, request_size,
    #: response_size, exemplar, scheme, labels)``: the response is complete (or never will
    #: be). ``labels``: the request-derived label values, in declaration order.
    finish: Callable[..., None]

    def __init__(
        self,
        settings: Settings,
        names: MetricNames,
        store: Store,
        bridge: Bridge | None = None,
        failures: FailureLog | None = None,
        in_flight: InFlightRequests | None = None,
    ) -> None:
        self.settings = settings
        self.names = names
        self.store = store
        #: The OpenTelemetry metrics bridge, when configured.
        self.otel = bridge
        self.failures = FailureLog() if failures is None else failures
        #: The requests in flight by identity, with ``in_flight_by_route``.
        self.in_flight = in_flight
        self._status_labels = status_labels(settings.group_status)
        self.wants_ttfb = settings.time_to_first_byte
        self.wants_request_size = settings.request_size
        self.wants_response_size = settings.response_size
        self._extras = self.wants_ttfb or self.wants_request_size or self.wants_response_size
        self._count_unmatched = settings.count_unmatched
        if in_flight is not None:
            self.start = self._start_routed
        else:
            self.start = self._start_bridged if bridge is not None else self._start
        plain = (
            bridge is None and not self._extras and in_flight is None
            and settings.count_unmatched and not settings.labels
        )
        self.finish = self._finish_plain if plain else self._finish

    def _start(self, method: str, scheme: str = "http", request: object = None) -> bool:
        try:
            self.store.start(method)
            return True
        except Exception as exc:
            self.failures.report("recording a request start", exc)
            return False

    def _start_bridged(self, method: str, scheme: str = "http", request: object = None) -> bool:
        try:
            self.otel.start(method, scheme)  # type: ignore[union-attr]
        except Exception as exc:
            self.failures.report("recording a request start (OpenTelemetry)", exc)
        return self._start(method, scheme)

    def _start_routed(
        self, method: str, scheme: str = "http", request: InFlightRequest | None = None
    ) -> object:
        if self.otel is not None:
            try:
                self.otel.start(method, scheme)
            except Exception as exc:
                self.failures.report("recording a request start (OpenTelemetry)", exc)
        try:
            assert request is not None, "in_flight_by_route needs the request"
            self.in_flight.enter(request)  # type: ignore[union-attr]
            return request
        except Exception as exc:
            self.failures.report("recording a request start", exc)
            return None

    def _finish_plain(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        in_flight: object,
        exc: BaseException | None = None,
        ttfb: float | None = None,
        request_size: int | None = None,
        response_size: int | None = None,
        exemplar: SpanIds | None = None,
        scheme: str = "http",
        labels: tuple[str, ...] = (),
    ) -> None:
        # No option that changes what is recorded: the store alone.
        try:
            if route is UNTRACKED_ROUTE:
                if in_flight:
                    self.store.end(method)
                return
            key = (method, route, self._status_labels.get(status, OTHER_STATUS))
            self.store.observe(key, duration, method if in_flight else None, exemplar)
            if exc is not None:
                self.store.count_exception((method, route, type(exc).__qualname__))
        except Exception as failure:
            self.failures.report("recording a request", failure)

    def _finish(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        in_flight: object,
        exc: BaseException | None = None,
        ttfb: float | None = None,
        request_size: int | None = None,
        response_size: int | None = None,
        exemplar: SpanIds | None = None,
        scheme: str = "http",
        labels: tuple[str, ...] = (),
    ) -> None:
        try:
            ended = self._leave(method, in_flight)
            if not self.records(route):
                if ended is not None:
                    self.store.end(ended)
                return
            key: Key = (method, route, self._status_labels.get(status, OTHER_STATUS), *labels)
            self.store.observe(key, duration, ended, exemplar)
            if exc is not None:
                self.store.count_exception((method, route, type(exc).__qualname__, *labels))
        except Exception as failure:
            self.failures.report("recording a request", failure)
            return
        if self._extras:
            try:
                self.store.observe_extra(
                    key,
                    ttfb if self.wants_ttfb else None,
                    request_size if self.wants_request_size else None,
                    response_size if self.wants_response_size else None,
                )
            except Exception as failure:
                self.failures.report("recording a request", failure)
        if self.otel is not None:
            try:
                self.otel.finish(method, scheme, route, status, duration, exc)
            except Exception as failure:
                self.failures.report("recording a request (OpenTelemetry)", failure)

    def records(self, route: str) -> bool:
        """Whether a request to ``route`` is recorded: not a ``do_not_track`` route, nor
        ``__unmatched__`` with ``count_unmatched=False``. Adapters read a request's
        label values only then, so a request never recorded calls no label source and
        takes none of a label's ``max_label_values`` places."""
        return route is not UNTRACKED_ROUTE and (
            self._count_unmatched or route != UNMATCHED_ROUTE
        )

    def _leave(self, method: str, in_flight: object) -> str | None:
        """Take the request out of the in-flight requests; the method the store's gauge
        still has to count down (``None``: nothing, or done here)."""
        if self.in_flight is None:
            return method if in_flight else None
        if in_flight:
            self.in_flight.leave(in_flight)  # type: ignore[arg-type]
        return None

    def exception(
        self, method: str, route: str, exc: BaseException, labels: tuple[str, ...] = ()
    ) -> None:
        """Count an exception raised after the request was already recorded (a streaming
        body that failed after its last chunk, a background task)."""
        if not self.records(route):
            return
        try:
            self.store.count_exception((method, route, type(exc).__qualname__, *labels))
        except Exception as failure:
            self.failures.report("recording an exception", failure)

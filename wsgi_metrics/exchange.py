"""One request in progress through the WSGI middleware.

An :class:`Exchange` is the ``start_response`` the app gets (a bound method) and the body
the server gets back (chunks and ``close()`` go through unchanged), and records the request
once, when the server closes the body. One object rather than a request, a closure and a
body: this runs on every request. Its variants are subclasses chosen once per middleware
(:class:`MeasuringExchange` when the time to first byte or the response size is on) and per
response (the ``Sized`` ones, when the app's iterable has ``len()``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import Token
from time import perf_counter
from typing import Any

from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS
from asgi_metrics.core.recorder import Recorder
from asgi_metrics.core.request_labels import (
    RequestLabels,
    close_assignments,
    enter_assignments,
)
from asgi_metrics.core.rules import (
    declared_length,
    has_header,
    header_value,
    route_or_unmatched,
)
from asgi_metrics.correlation.context import reset_correlation_id
from asgi_metrics.otel.spans import SpanIds, read_span
from wsgi_metrics.request_body import CountingInput, request_size
from wsgi_metrics.types import EXCEPTION_KEY, Environ, ExcInfo, RouteResolver, StartResponse

#: Present in the environ when Werkzeug's debugger is outside us: it renders unhandled
#: exceptions itself, so they must reach it unchanged.
_DEBUGGER_KEY = "werkzeug.debug.preserve_context"
_ERROR_STATUS = "500 Internal Server Error"
_ERROR_BODY = b"Internal Server Error"


class Plan:
    """What one middleware does per request, decided once when it is built."""

    __slots__ = (
        "exemplars", "failures", "id_name", "labels", "recorder", "request_size", "resolver",
        "routed", "span_attribute", "span_reads", "wants_scheme",
    )

    def __init__(
        self,
        recorder: Recorder,
        resolver: RouteResolver | None,
        exemplars: bool,
        span_attribute: bool,
        id_name: str,
        labels: RequestLabels | None = None,
    ) -> None:
        self.recorder = recorder
        #: The request-derived labels, or ``None`` when none are declared.
        self.labels = labels
        #: Whether the in-flight gauge is by route (each request gets a probe).
        self.routed = recorder.in_flight is not None
        self.failures = recorder.failures
        self.resolver = resolver
        self.exemplars = exemplars
        #: Whether the span gets the correlation ID as an attribute.
        self.span_attribute = span_attribute
        # The span is read once, when the app starts its response (its span is current
        # then, from an OpenTelemetry middleware outside us or inside).
        self.span_reads = exemplars or span_attribute
        self.request_size = recorder.wants_request_size
        # Only the OpenTelemetry bridge uses the scheme: only looked up for it.
        self.wants_scheme = recorder.otel is not None
        #: The correlation header's lower-case name.
        self.id_name = id_name


class Exchange:
    """One request: its state, ``start_response`` for the app, the body for the server.

    Slots, all set in ``__init__`` (on CPython 3.11 reading a class-level default is
    several times slower than a slot) but ``handed``, which only a response handed to
    Werkzeug's test client gets and only :meth:`handed_end` reads.
    """

    __slots__ = (
        "__weakref__", "assigned", "assignments", "counted", "done", "environ", "exc",
        "handed", "headers", "id_header", "in_flight", "iterable", "iteration_end",
        "label_values", "method", "plan", "request_size", "response_size", "route",
        "scheme", "server_start_response", "span_ids", "start", "status", "token", "ttfb",
    )
    #: When the app handed the response to Werkzeug's test client (unset otherwise).
    handed: float

    def __init__(
        self,
        plan: Plan,
        environ: Environ,
        start_response: StartResponse,
        counted: bool,
        method: str,
    ) -> None:
        self.start = perf_counter()
        self.plan = plan
        self.environ = environ
        self.server_start_response = start_response
        #: False for an excluded path or method: it only gets its correlation ID, nothing
        #: is recorded.
        self.counted = counted
        self.method = method
        self.scheme = _scheme(environ) if plan.wants_scheme else "http"
        self.in_flight = counted and plan.recorder.start(
            method, self.scheme, RouteProbe(self) if plan.routed else None
        )
        #: The declared request body size, or, without one, the counting wsgi.input the
        #: app was given; None when request_size is off.
        self.request_size: int | CountingInput | None = (
            request_size(environ) if counted and plan.request_size else None
        )
        self.status = 0  # 0 until start_response
        self.headers: Sequence[tuple[str, str]] = ()
        self.route: str | None = None
        self.done = False
        self.exc: BaseException | None = None
        self.ttfb: float | None = None
        self.response_size: int | None = 0
        self.iteration_end: float | None = None
        self.iterable: Iterable[bytes] = ()
        #: (trace_id, span_id) of the sampled span the request is served in.
        self.span_ids: SpanIds | None = None
        #: The correlation header to add to the response, and the ContextVar token to
        #: reset when the server closes the response.
        self.id_header: tuple[str, str] | None = None
        self.token: Token[str | None] | None = None
        #: With request-derived labels: the request's set_label values, the token to
        #: forget them with, and the values recorded (for a late exception).
        self.assigned: dict[str, object] | None = None
        self.assignments: Token[dict[str, object] | None] | None = None
        self.label_values: tuple[str, ...] = ()

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        """The ``start_response`` the app gets."""
        # Called again with exc_info when the app replaces a failed response. The server's
        # call goes first: if it refuses (headers already sent, it re-raises the app's
        # exception), the status on the wire is still the earlier one.
        header = self.id_header
        if header is not None and not has_header(headers, self.plan.id_name):
            # In a new list, as the app's may be reused (a module-level constant).
            headers = [*headers, header]
        if exc_info is None:
            write = self.server_start_response(status, headers)
        else:
            write = self.server_start_response(status, headers, exc_info)
            self.exc = exc_info[1]
        self.headers = headers
        if self.span_ids is None and self.plan.span_reads:
            # The app calls start_response inside its own call (or its first iteration),
            # while an OpenTelemetry middleware's span is current, outside us or inside;
            # at close() the server may be back in another context.
            self._read_span()
        try:
            self.status = int(status[:3])
        except (TypeError, ValueError):
            self.status = -1  # labelled "other"; the server will reject it anyway
        if self.route is None and self.counted:
            # Now, while a framework's request state is still alive.
            self.route = route_or_unmatched(self.plan.failures, self.plan.resolver, self.environ)
        return write

    def _read_span(self) -> None:
        plan = self.plan
        header = self.id_header
        self.span_ids = read_span(
            header[1] if header is not None and plan.span_attribute else None,
            plan.exemplars,
            plan.failures,
        )

    def release(self) -> None:
        """Reset the correlation ID and forget the set_label values: the request is over
        (the server closed its body)."""
        token = self.token
        if token is not None:
            self.token = None
            reset_correlation_id(token)
        assignments = self.assignments
        if assignments is not None:
            self.assignments = None
            close_assignments(assignments)

    def hold_assignments(self, result: Iterable[bytes]) -> Iterable[bytes]:
        """For a response handed to Werkzeug's test client, which reads it when the test
        asks (interleaved with other requests) and may never close it: the request's
        set_label values stop being current now, and are current again only while its
        body is read (see :class:`HeldBody`)."""
        assigned, token = self.assigned, self.assignments
        if assigned is None or token is None:
            return result
        self.assignments = None
        close_assignments(token)
        return HeldBody(result, assigned)

    def answer_error(
        self, start_response: StartResponse, exc: Exception
    ) -> Iterable[bytes] | None:
        """Send the 500 for an exception the app raised from its call, with the correlation
        header (see the middleware's docs for why here); ``None`` when it must be re-raised
        as is (an outer layer answers it, or the server refuses: the headers already went
        out through ``write()``)."""
        if _outer_layer_answers(self.environ, exc):
            return None
        assert self.id_header is not None
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_ERROR_BODY))),
            self.id_header,
        ]
        try:
            start_response(_ERROR_STATUS, headers, (type(exc), exc, exc.__traceback__))
        except BaseException:
            return None
        self.status = 500
        self.headers = headers
        self.finish(exc, True)
        return ErrorBody(self, exc)

    def pass_file(self, result: Any) -> Any:
        """The server's file wrapper goes back itself (servers recognise it by type to use
        sendfile()), with only its close() observed; ``None`` if that cannot be patched."""
        try:
            inner_close = getattr(result, "close", None)

            def close() -> None:
                try:
                    if inner_close is not None:
                        inner_close()
                finally:
                    self.finish(None, False, True)
                    self.release()

            result.close = close
        except Exception:  # __slots__ or a read-only close: observe it the usual way
            return None
        self.ttfb = perf_counter() - self.start
        # A file wrapper's bytes go out through sendfile(), unseen: the declared length.
        self.response_size = declared_length(header_value(self.headers, "content-length"))
        return result

    def __iter__(self) -> Iterator[bytes]:
        # Neither time to first byte nor response size is on: nothing to do per chunk.
        try:
            # Not ``yield from``: it would forward a close() of this generator (when it is
            # collected) to the app's iterable, which only our close() may close.
            for chunk in self.iterable:  # noqa: UP028
                yield chunk
        except GeneratorExit:  # the server stopped iterating (client gone): not an error
            raise
        except BaseException as exc:
            self.finish(exc, True)
            raise
        self.iteration_end = perf_counter()

    def close(self) -> None:
        """Close the app's iterable (if it has ``close``), then record the request."""
        try:
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self.finish(exc, True)
            raise
        finally:
            self.finish(None, False, True)
            if self.token is not None or self.assignments is not None:
                self.release()

    def handed_end(self) -> float | None:
        """When a never-closed response ended: its iteration's end, else when the app
        handed it to Werkzeug's test client, else ``None`` (now)."""
        end = self.iteration_end
        return getattr(self, "handed", None) if end is None else end

    def __del__(self) -> None:
        # Never closed (the Werkzeug test client before a scrape, a broken server): the
        # request still has to leave the in-flight gauge. It is timed to the end of its
        # iteration, or to its hand-over to the test client, or to now. The correlation
        # ID is not reset here: the collector may run in any thread, or after this
        # thread's next request set its own ID, which a reset would wipe out.
        if not self.done:
            self.finish(None, False, True, self.handed_end())

    def finish(
        self,
        exc: BaseException | None,
        failed: bool = False,
        closed: bool = False,
        end: float | None = None,
    ) -> None:
        """Record the request once (later calls only count a late exception)."""
        if self.done:
            if exc is not None and self.counted:
                self.plan.recorder.exception(
                    self.method, self.route or "", exc, self.label_values
                )
            return
        self.done = True
        if not self.counted:
            return
        plan = self.plan
        route = self.route
        if route is None:
            route = self.route = route_or_unmatched(plan.failures, plan.resolver, self.environ)
        duration = (perf_counter() if end is None else end) - self.start
        if self.span_ids is None and not closed and plan.span_reads:
            # Never started: recorded from the failing call or iteration, where an outer
            # OpenTelemetry middleware's span is still current (at close() it may not be).
            self._read_span()
        request_size = self.request_size
        if isinstance(request_size, CountingInput):
            request_size = request_size.count  # what the app read of a chunked body
        if exc is None:
            # An exception the app turned into a response itself (start_response with
            # exc_info, or a framework that reported it in the environ) is still counted.
            exc = self.exc
            if exc is None:
                handled = self.environ.get(EXCEPTION_KEY)
                if isinstance(handled, BaseException):
                    exc = handled
        status = self.status
        if not status:
            # No status: closed before the body was consumed means the server gave up on
            # the client; anything else ends in the server's own 500.
            status = (
                CLIENT_CLOSED_STATUS
                if closed and not failed and self.iteration_end is None
                else 500
            )
        # Positional: this is per request, and keyword arguments cost more.
        labels = plan.labels
        if labels is None or not plan.recorder.records(route):
            plan.recorder.finish(
                self.method, route, status, duration, self.in_flight, exc, self.ttfb,
                request_size, self.response_size, self.span_ids, self.scheme,
            )
            return
        self.label_values = values = labels.values(
            self.environ, self.headers, self.method, route, status, self.assigned
        )
        plan.recorder.finish(
            self.method, route, status, duration, self.in_flight, exc, self.ttfb,
            request_size, self.response_size, self.span_ids, self.scheme, values,
        )


class RouteProbe:
    """What the in-flight gauge by route sees of a request (``in_flight_by_route``): its
    method and its route so far. Not the exchange itself, so that an exchange nothing
    closes can still be collected (and recorded by its ``__del__``)."""

    __slots__ = ("exchange", "method")

    def __init__(self, exchange: Exchange) -> None:
        self.method = exchange.method
        self.exchange = weakref.ref(exchange)

    def in_flight_route(self) -> str | None:
        """The route found at ``start_response``, else the framework's answer so far."""
        exchange = self.exchange()
        if exchange is None:
            return None
        if exchange.route is not None:
            return exchange.route
        resolver = exchange.plan.resolver
        return None if resolver is None else resolver(exchange.environ)


class SizedExchange(Exchange):
    """An :class:`Exchange` whose app iterable has ``len()``: servers may use it."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class MeasuringExchange(Exchange):
    """An :class:`Exchange` that times the first chunk and counts the bytes."""

    __slots__ = ()

    def __iter__(self) -> Iterator[bytes]:
        start = self.start
        size = 0
        try:
            for chunk in self.iterable:
                if self.ttfb is None:
                    self.ttfb = perf_counter() - start
                size += len(chunk)
                self.response_size = size
                yield chunk
        except GeneratorExit:  # the server stopped iterating (client gone): not an error
            raise
        except BaseException as exc:
            self.finish(exc, True)
            raise
        self.iteration_end = perf_counter()


class SizedMeasuringExchange(MeasuringExchange):
    """A :class:`MeasuringExchange` whose app iterable has ``len()``."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class HeldBody:
    """The app's iterable of a response held by Werkzeug's test client: each chunk is
    taken with the request's set_label values current, so a streamed body's set_label
    reaches its own request and nothing in between does. ``close()`` is the app's."""

    __slots__ = ("_assigned", "_inner")

    def __init__(self, inner: Iterable[bytes], assigned: dict[str, object]) -> None:
        self._inner = inner
        self._assigned = assigned

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            token = enter_assignments(self._assigned)
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                close_assignments(token)
            yield chunk

    def __len__(self) -> int:
        # Asked only when the app's iterable has len() (the Sized exchanges).
        return len(self._inner)  # type: ignore[arg-type]

    def close(self) -> None:
        """Close the app's iterable."""
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class ErrorBody:
    """The middleware's own 500 body: yields it, then raises the app's exception, so the
    server logs it as a failure after the headers."""

    __slots__ = ("_exc", "_request")

    def __init__(self, request: Exchange, exc: Exception) -> None:
        self._request = request
        self._exc: Exception | None = exc

    def __iter__(self) -> Iterator[bytes]:
        yield _ERROR_BODY
        self._raise()

    def _raise(self) -> None:
        exc = self._exc
        if exc is not None:
            self._exc = None  # raised once: at the end of the iteration, or at close()
            raise exc

    def close(self) -> None:
        """Reset the correlation ID; raise the exception if the iteration did not."""
        try:
            self._raise()
        finally:
            self._request.release()


def _outer_layer_answers(environ: Environ, exc: BaseException) -> bool:
    """Whether a layer outside the middleware wants ``exc`` raised to it unchanged."""
    # A framework that reported the exception as handled (EXCEPTION_KEY) and raised it
    # anyway propagates it on purpose: Flask in debug/testing or with PROPAGATE_EXCEPTIONS.
    return environ.get(EXCEPTION_KEY) is exc or _DEBUGGER_KEY in environ


def _scheme(environ: Environ) -> str:
    raw = environ.get("wsgi.url_scheme")
    return raw if isinstance(raw, str) and raw else "http"

"""One request in progress through the ASGI middleware: the observer of its messages.

A tiny per-request object, with a subclass per variant (as Starlette's ``GZipResponder``):
:class:`Exchange` watches the messages go by and records the request once its response is
complete; :class:`MeasuringExchange` also measures body sizes and the time to first byte
(only built when one of those histograms is on); :class:`UncountedExchange` only carries
the correlation ID of an excluded path. The messages are passed on unchanged, except for
the correlation header added to ``http.response.start``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextvars import Token
from time import perf_counter

from asgi_metrics.asgi.headers import Header, declared_size, with_header
from asgi_metrics.asgi.types import Message, Receive, Scope, Send
from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.keys import ASGI_EXCEPTION_KEY
from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS, UNMATCHED_ROUTE
from asgi_metrics.core.recorder import Recorder
from asgi_metrics.core.request_labels import RequestLabels, fresh_assignments
from asgi_metrics.core.rules import route_or_unmatched
from asgi_metrics.correlation.context import reset_correlation_id
from asgi_metrics.otel.spans import SpanIds, read_span
from asgi_metrics.routes import RouteLookup

#: Where an app reports an exception it turned into its own response (see core/keys.py).
EXCEPTION_KEY = ASGI_EXCEPTION_KEY


class Plan:
    """What one middleware does per request, decided once when it is built."""

    __slots__ = (
        "exchange", "exemplars", "failures", "labels", "lookup", "recorder", "request_size",
        "span_attribute", "span_reads",
    )

    def __init__(
        self,
        recorder: Recorder,
        lookup: RouteLookup,
        exemplars: bool,
        span_attribute: bool,
        labels: RequestLabels | None = None,
    ) -> None:
        self.recorder = recorder
        #: The request-derived labels, or ``None`` when none are declared.
        self.labels = labels
        self.failures: FailureLog = recorder.failures
        self.lookup = lookup
        self.exemplars = exemplars
        #: Whether the span gets the correlation ID as an attribute.
        self.span_attribute = span_attribute
        self.span_reads = exemplars or span_attribute
        settings = recorder.settings
        self.request_size = settings.request_size
        # Body sizes and the time to first byte cost per message: only measured when
        # one of their histograms is on.
        measuring = settings.time_to_first_byte or settings.request_size or settings.response_size
        self.exchange: type[Exchange] = MeasuringExchange if measuring else Exchange


class Exchange:
    """A counted request: watches the messages, records the request once."""

    #: Whether the request is counted (in flight now, recorded at the end).
    counted = True

    #: Set only when labels are declared: the request's set_label values, and the label
    #: values it was recorded with (for a late exception).
    assigned: dict[str, object] | None
    label_values: tuple[str, ...]

    __slots__ = (
        "_receive", "_send", "assigned", "cid", "disconnected", "done", "head", "id_header",
        "in_flight", "label_values", "method", "plan", "request_size", "response_size",
        "root_path", "route", "scheme", "scope", "start", "status", "token", "trailers",
        "ttfb",
    )

    def __init__(
        self,
        plan: Plan,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        cid: str | None,
        token: Token[str | None] | None,
    ) -> None:
        self.start = perf_counter()
        self.plan = plan
        self.scope = scope
        self._receive = receive
        self._send = send
        self.method = method
        self.scheme: str = scope.get("scheme") or "http"
        # root_path as it arrived: Starlette's Mounts extend it while routing.
        self.root_path: str = scope.get("root_path", "")
        self.in_flight = self.counted and plan.recorder.start(method, self.scheme, self)
        self.status = 0  # 0 until the response starts
        self.done = False
        self.disconnected = False
        self.trailers = False
        self.route = UNMATCHED_ROUTE
        self.ttfb: float | None = None
        self.request_size = 0
        self.response_size = 0
        #: The correlation ID, its response header (or None) and its ContextVar token.
        self.cid = cid
        self.id_header: Header | None = None
        self.token = token
        #: The response start the app sent (read by response-header labels).
        self.head: Message | None = None
        if plan.labels is not None:
            # A new dict for set_label, current in the request's context from here on
            # (the app runs in it). Not reset afterwards: every ASGI request runs in a
            # task, and so a context, of its own, and a later request in the same context
            # (a test client's) gets a new dict here; a reset would cost a frame around
            # every request.
            self.assigned = fresh_assignments()
            self.label_values = ()

    async def receive(self) -> Message:
        """The ``receive`` the app gets: notes a disconnect."""
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
        return message

    def send(self, message: Message) -> Awaitable[None]:
        """The ``send`` the app gets: records the request as the app hands its last
        message to the server. A plain function returning the server's awaitable: one
        coroutine less per message."""
        kind = message["type"]
        if kind == "http.response.body":
            if not message.get("more_body") and not self.trailers and not self.done:
                return self._send_last(message)
        elif kind == "http.response.start":
            self.head = message
            # A response started after the client went away reaches nobody (often
            # Starlette's 500 for ClientDisconnect): the client closed the request.
            self.status = (
                CLIENT_CLOSED_STATUS if self.disconnected else message.get("status", 0)
            )
            if message.get("trailers"):
                self.trailers = True
            if self.id_header is not None:
                message = with_header(message, self.id_header)
        elif not self.done and (
            kind == "http.response.pathsend"
            or (kind == "http.response.zerocopysend" and not message.get("more_body"))
            or (kind == "http.response.trailers" and not message.get("more_trailers"))
        ):
            return self._send_last(message)
        return self._send(message)

    async def _send_last(self, message: Message) -> None:
        """Pass the last message on, then record the request.

        Its duration ends as the app hands the message over, but it is recorded only once
        the server has taken it: servers write the response head and the body as each
        arrives, and work between the two writes leaves the client with half a response,
        woken once more for the rest (several times our own CPU cost end to end)."""
        end = perf_counter()
        # The correlation ID span attribute goes on before the message is passed on:
        # OpenTelemetry's ASGI middleware, outside us, ends its server span once it has
        # sent the last message.
        attribute = self.plan.span_attribute
        exemplar = self._span() if attribute else None
        try:
            await self._send(message)
        finally:
            if not self.done:
                self._record(self.status, None, end, exemplar if attribute else self._span())

    def unfinished_status(self) -> int:
        """The status of a request that ended without completing its response: the one
        already sent, else 499 when the client had gone, else the server's own 500."""
        return self.status or (CLIENT_CLOSED_STATUS if self.disconnected else 500)

    def finish(self, status: int, exc: BaseException | None = None) -> None:
        """Record the request now (once: the caller checks :attr:`done`)."""
        self._record(status, exc, perf_counter(), self._span())

    def _span(self) -> SpanIds | None:
        """The span current now (an OpenTelemetry middleware's, outside us or inside): its
        IDs for the exemplar; it gets the correlation ID attribute (when each is on)."""
        plan = self.plan
        if not plan.span_reads:
            return None
        return read_span(self.cid if plan.span_attribute else None, plan.exemplars, plan.failures)

    def _record(
        self, status: int, exc: BaseException | None, end: float, exemplar: SpanIds | None
    ) -> None:
        self.done = True
        plan = self.plan
        self.route = route = route_or_unmatched(
            plan.failures, plan.lookup, self.scope, self.root_path
        )
        if exc is None:
            # An exception the app (or its framework) turned into a response itself.
            reported = self.scope.get(EXCEPTION_KEY)
            exc = reported if isinstance(reported, BaseException) else None
        labels = plan.labels
        if labels is None or not plan.recorder.records(route):
            # No labels, or a request that is not recorded (do_not_track, unmatched with
            # count_unmatched=False): no label is read, none takes a value's place.
            plan.recorder.finish(
                self.method, route, status, end - self.start, self.in_flight, exc,
                self.ttfb, self.request_size, self.response_size, exemplar, self.scheme,
            )
            return
        self.label_values = values = labels.values(
            self.scope, self.head, self.method, route, status, self.assigned
        )
        plan.recorder.finish(
            self.method, route, status, end - self.start, self.in_flight, exc,
            self.ttfb, self.request_size, self.response_size, exemplar, self.scheme, values,
        )

    def late_exception(self, exc: BaseException) -> None:
        """An exception after the request was recorded (a failing stream's last part)."""
        values = self.label_values if self.plan.labels is not None else ()
        self.plan.recorder.exception(self.method, self.route, exc, values)

    def in_flight_route(self) -> str | None:
        """The route the framework's router chose so far (``in_flight_by_route``)."""
        return self.plan.lookup(self.scope, self.root_path)

    def release(self) -> None:
        """Reset the correlation ID: the request is over."""
        reset_correlation_id(self.token)


class MeasuringExchange(Exchange):
    """An :class:`Exchange` that also measures body sizes and the time to first byte.

    The request size is the declared ``Content-Length``; only a body without one (chunked)
    is measured by counting the bytes the app received."""

    __slots__ = ("count_body",)

    def __init__(
        self,
        plan: Plan,
        scope: Scope,
        receive: Receive,
        send: Send,
        method: str,
        cid: str | None,
        token: Token[str | None] | None,
    ) -> None:
        super().__init__(plan, scope, receive, send, method, cid, token)
        declared = declared_size(scope) if plan.request_size else None
        self.count_body = declared is None
        self.request_size = declared or 0

    async def receive(self) -> Message:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request":
            body = message.get("body")
            if body and self.count_body:
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


class UncountedExchange(Exchange):
    """An excluded path with correlation IDs on: not counted, but it still gets its ID on
    the response, and on the span when OpenTelemetry is there."""

    __slots__ = ()
    counted = False

    def _span(self) -> SpanIds | None:
        if self.plan.span_attribute:
            read_span(self.cid, False, self.plan.failures)
        return None

    def _record(
        self, status: int, exc: BaseException | None, end: float, exemplar: SpanIds | None
    ) -> None:
        self.done = True

    def late_exception(self, exc: BaseException) -> None:
        pass

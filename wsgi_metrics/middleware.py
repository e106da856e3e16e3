"""The pure WSGI middleware.

It hands the app's status, headers and response iterable to the server unchanged; it only
looks at them. The app gets the server's ``wsgi.input`` too, except with
``request_size=True`` for a request without ``Content-Length`` (a chunked body): then a
wrapper counts what the app reads (:class:`_CountingInput`), the one way to know its size.
A request is timed from its arrival to the moment the server calls the response
iterable's ``close()`` (PEP 3333 servers always do), so a streaming generator is timed in
full. Werkzeug's test client may never close a response: one it holds is counted by
the next scrape instead (see ``MetricsMiddleware._record_handed``). The counting itself
is :class:`asgi_metrics.core.recorder.Recorder`'s.

With ``correlation_id=True`` the one change it makes is adding the correlation header to
the app's response headers. The ID is set in :func:`~asgi_metrics.get_correlation_id`'s
ContextVar when the request arrives and reset when the server calls ``close()``, so a
streamed body sees it while it is consumed and a thread-pool worker does not carry it into
its next request.

Unhandled exceptions with ``correlation_id=True``: when the app raises from its call, the
server answers with its own 500, which cannot carry the header (gunicorn, Werkzeug and
wsgiref all drop a ``start_response`` made before the exception and send their own page).
So the middleware answers that 500 itself (``start_response`` with ``exc_info``, the plain
``Internal Server Error`` the servers send, with the header) and re-raises the exception
from the body's iteration, after the last byte: the server still logs it (and closes the
connection, as it does for any failure after the headers), and outer middleware that watch
the iteration (OpenTelemetry's, Sentry's) still see it. It steps aside, re-raising at once,
when an outer layer answers on purpose: Werkzeug's debugger (its environ key is present)
or a framework that reported the exception in :data:`EXCEPTION_KEY` and raised it anyway
(Flask with ``PROPAGATE_EXCEPTIONS``, debug or testing).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import Token
from http import HTTPStatus
from time import perf_counter
from types import FunctionType, TracebackType
from typing import Any

from asgi_metrics.core.labels import (
    CLIENT_CLOSED_STATUS,
    KNOWN_METHODS,
    OTHER_METHOD,
    UNMATCHED_ROUTE,
)
from asgi_metrics.core.rules import declared_length, path_filter
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.correlation.context import current_correlation_id, reset_correlation_id
from asgi_metrics.correlation.ids import (
    CorrelationIds,
)
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE
from asgi_metrics.otel.spans import SpanIds, read_span
from asgi_metrics.wiring import build

# Bound once: per request, a call without the attribute lookup.
_set_correlation_id = current_correlation_id.set

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteResolver = Callable[[Environ], "str | None"]

#: An app or framework integration that turns an exception into a 500 response itself
#: (so the middleware never sees it raised) can put the exception here to have it counted
#: in the exceptions counter. :mod:`wsgi_metrics.flask` does this for Flask.
EXCEPTION_KEY = "wsgi_metrics.exception"

#: Present in the environ when Werkzeug's debugger is outside us: it renders unhandled
#: exceptions itself, so they must reach it unchanged.
_DEBUGGER_KEY = "werkzeug.debug.preserve_context"
_ERROR_STATUS = "500 Internal Server Error"
_ERROR_BODY = b"Internal Server Error"
#: The module of the ``start_response`` Werkzeug's test client passes (``run_wsgi_app``,
#: behind ``werkzeug.test.Client`` and Flask's ``app.test_client()``).
_TEST_CLIENT_MODULE = "werkzeug.test"


class MetricsMiddleware:
    """Counts and times every HTTP request of a WSGI app and serves ``/metrics``.

    ``app.wsgi_app = MetricsMiddleware(app.wsgi_app, **options)`` (Flask) or
    ``application = MetricsMiddleware(application, **options)`` (any WSGI app). ``options``
    are the same settings as the ASGI middleware's (``namespace``, ``buckets``,
    ``exclude_paths``, ...); ``HTTP_METRICS_*`` environment variables fill in the rest.

    ``route_resolver(environ) -> str | None`` returns the route *template* of a request
    (``None`` means unmatched). It is called once per request, when the app calls
    ``start_response`` (or, if it never does, when it has returned or raised), so a
    framework's request state is still alive. Wrapping a Flask app's ``wsgi_app`` picks
    Flask's matched rule automatically; otherwise every request is ``__unmatched__``.
    """

    def __init__(
        self, app: WSGIApp, *, route_resolver: RouteResolver | None = None, **options: Any
    ) -> None:
        self._setup(app, Settings.build(options), route_resolver)

    @classmethod
    def from_settings(
        cls,
        app: WSGIApp,
        settings: Settings,
        *,
        route_resolver: RouteResolver | None = None,
        framework: RouteResolver | None = None,
    ) -> MetricsMiddleware:
        """Build the middleware from an already validated :class:`Settings` (used by the
        Flask extension, which merges ``app.config`` first). ``framework`` is a framework's
        route lookup to use when ``route_resolver`` is not given, instead of detecting it
        from ``app``."""
        self = cls.__new__(cls)
        self._setup(app, settings, route_resolver, framework)
        return self

    def _setup(
        self,
        app: WSGIApp,
        settings: Settings,
        route_resolver: RouteResolver | None,
        framework: RouteResolver | None = None,
    ) -> None:
        if route_resolver is not None and not callable(route_resolver):
            raise ConfigurationError(
                f"setting 'route_resolver': expected a callable, got {route_resolver!r}"
            )
        self.app = app
        self.settings = settings
        parts = build(settings)
        self.recorder = parts.recorder
        self.exposition = parts.exposition
        self._metrics_path = settings.metrics_path
        # Kept even when the user's resolver wins: Flask's also reports the exceptions
        # Flask turns into 500s, and it lives only as long as this reference.
        self._framework = _framework_resolver(app) if framework is None else framework
        self._route_resolver = route_resolver if route_resolver is not None else self._framework
        self._correlation = CorrelationIds(settings) if settings.correlation_id else None
        name = settings.correlation_header.lower()
        #: The correlation header's lower-case name and its initial in both cases.
        self._id_name = (name, name[0] + name[0].upper())
        self._exemplars = parts.exemplars
        # The span is read once, when the app starts its response (its span is current
        # then, from an OpenTelemetry middleware outside us or inside), for both the
        # exemplar and the correlation ID span attribute.
        self._span_attribute = self._correlation is not None and OTEL_AVAILABLE
        self._span_lookup = self._exemplars or self._span_attribute
        # Per-request shortcuts: plain attributes read once, not re-derived per request.
        self._counts = path_filter(settings)
        # The body classes (without, with len()): the measuring one only when time to
        # first byte or response size is on, so otherwise no chunk costs anything.
        self._body_classes: tuple[type[_Exchange], type[_Exchange]] = (
            (_MeasuringExchange, _SizedMeasuringExchange)
            if settings.time_to_first_byte or settings.response_size
            else (_Exchange, _SizedExchange)
        )
        # No OpenTelemetry instruments: a request start goes straight to the store.
        self._store_start = self.recorder.store.start if self.recorder.otel is None else None
        self._request_size = self.recorder.wants_request_size
        #: Responses handed to Werkzeug's test client and maybe never closed, by id (see
        #: _hand_over); weak, so a response the test drops is still recorded when freed.
        self._handed: weakref.WeakValueDictionary[int, _Exchange] = (
            weakref.WeakValueDictionary()
        )

    def _route(self, environ: Environ) -> str:
        if self._route_resolver is None:
            return UNMATCHED_ROUTE
        try:
            route = self._route_resolver(environ)
            return route if isinstance(route, str) else UNMATCHED_ROUTE
        except Exception as exc:
            self.recorder.failures.report("route lookup", exc)
            return UNMATCHED_ROUTE

    def metrics_app(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        """The WSGI app serving this middleware's metrics (mounted at ``metrics_path``;
        mount it elsewhere too if wanted)."""
        if self._handed:
            self._record_handed()
        method = environ.get("REQUEST_METHOD", "GET")
        status, headers, body = self.exposition.respond(
            method,
            environ.get("HTTP_ACCEPT"),
            environ.get("HTTP_ACCEPT_ENCODING"),
            environ.get("HTTP_AUTHORIZATION"),
        )
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [b"" if method == "HEAD" else body]

    def _hand_over(self, exchange: _Exchange) -> None:
        """Note a response handed to Werkzeug's test client, for :meth:`_record_handed`."""
        try:
            exchange.handed = perf_counter()
            self._handed[id(exchange)] = exchange
        except Exception as exc:  # then it is recorded at close() or when freed, as before
            self.recorder.failures.report("noting a test client response", exc)

    def _record_handed(self) -> None:
        """Record the responses Werkzeug's test client holds unclosed, before a scrape.

        The test client calls the app, takes the first chunk and hands the response to the
        test, which may never close it (nor read it): a server would have sent it, so the
        scrape counts it. Timed to the end of its iteration if the test read it, else to
        when the app returned it. A later close() still closes the app's iterable and
        resets the correlation ID, without recording again; a scrape never resets the ID
        (the test's next request may have set its own).
        """
        handed = self._handed
        for ref in handed.valuerefs():  # a list taken at once: requests may add meanwhile
            exchange = ref()
            if exchange is None:
                continue
            handed.pop(id(exchange), None)
            try:
                # finish() claims the exchange before anything else (done is tested and
                # set with no call in between), so a close() racing in another thread
                # does not record it a second time.
                if not exchange.done:
                    exchange.finish(None, False, True, exchange.handed_end())
            except Exception as exc:
                self.recorder.failures.report("recording a test client response", exc)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == self._metrics_path:
            return self.metrics_app(environ, start_response)
        counted = self._counts(path)
        correlation = self._correlation
        if not counted and correlation is None:
            return self.app(environ, start_response)

        body_classes = self._body_classes
        exchange = body_classes[0](self, environ, start_response, counted)
        if correlation is not None:
            try:
                cid = correlation.for_request(
                    environ.get(correlation.environ_key), environ.get("REMOTE_ADDR")
                )
                exchange.token = _set_correlation_id(cid)
                exchange.id_header = (correlation.header, cid)
            except Exception as exc:
                # Fail open: served without a correlation ID rather than not at all.
                self.recorder.failures.report("reading the request", exc)
        try:
            result = self.app(environ, exchange.start_response)
        except BaseException as exc:
            if exchange.id_header is not None and isinstance(exc, Exception):
                answer = exchange.answer_error(start_response, exc)
                if answer is not None:
                    return answer
            exchange.finish(exc, True)
            exchange.release()
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is None:
            # Maybe Werkzeug's test client, which may never close the response (see
            # _record_handed). Looked for only here: gunicorn, uWSGI, waitress, mod_wsgi
            # and wsgiref give a file wrapper and the test client does not, so they pay
            # nothing for it; other servers pay two cheap checks.
            if type(start_response) is FunctionType and (
                start_response.__module__ == _TEST_CLIENT_MODULE
            ):
                self._hand_over(exchange)
        elif isinstance(wrapper, type) and isinstance(result, wrapper):
            passed = exchange.pass_file(result)
            if passed is not None:
                return passed  # type: ignore[no-any-return]
        exchange.iterable = result
        if hasattr(result, "__len__"):
            # Servers may use len() (a one-item list lets wsgiref set Content-Length), so
            # it stays visible. Same layout, so switching the class is safe and cheaper
            # than a second object.
            exchange.__class__ = body_classes[1]
        return exchange


def _outer_layer_answers(environ: Environ, exc: BaseException) -> bool:
    """Whether a layer outside the middleware wants ``exc`` raised to it unchanged."""
    # A framework that reported the exception as handled (EXCEPTION_KEY) and raised it
    # anyway propagates it on purpose: Flask in debug/testing or with PROPAGATE_EXCEPTIONS.
    return environ.get(EXCEPTION_KEY) is exc or _DEBUGGER_KEY in environ


class _Exchange:
    """One counted request: its state, the ``start_response`` the app gets (a bound
    method) and the body the server gets back (chunks and ``close()`` go through
    unchanged).

    One object rather than a request, a closure and a body: this runs on every request,
    next to an app whose own work keeps evicting ours from the CPU caches, so each object
    and call costs more than it does in a micro-benchmark. Slots, all set in ``__init__``
    (on CPython 3.11 reading a class-level default is several times slower than a slot)
    but ``handed``, which only a response handed to Werkzeug's test client gets and only
    :meth:`handed_end` reads.
    """

    __slots__ = (
        "__weakref__", "counted", "done", "environ", "exc", "handed", "headers",
        "id_header", "in_flight", "iterable", "iteration_end", "method", "middleware",
        "request_size",
        "response_size", "route", "scheme", "server_start_response", "span_ids", "start",
        "status", "token", "ttfb",
    )
    #: When the app handed the response to Werkzeug's test client (unset otherwise).
    handed: float

    def __init__(
        self,
        middleware: MetricsMiddleware,
        environ: Environ,
        start_response: StartResponse,
        counted: bool,
    ) -> None:
        self.start = perf_counter()
        self.middleware = middleware
        self.environ = environ
        self.server_start_response = start_response
        # method_label inlined: a set lookup (it raises for an unhashable method, as
        # method_label does).
        method = environ.get("REQUEST_METHOD")
        self.method = method = method if method in KNOWN_METHODS else OTHER_METHOD
        scheme = "http"  # only the OpenTelemetry bridge uses it: only looked up for it
        #: False for an excluded path: it only gets its correlation ID, nothing is recorded.
        self.counted = counted
        if not counted:
            self.in_flight = False
        elif middleware._store_start is not None:
            # Recorder.start without its OpenTelemetry part: one call instead of two.
            try:
                middleware._store_start(method)
                self.in_flight = True
            except Exception as exc:
                middleware.recorder.failures.report("recording a request start", exc)
                self.in_flight = False
        else:
            raw = environ.get("wsgi.url_scheme")
            if isinstance(raw, str) and raw:
                scheme = raw
            self.in_flight = middleware.recorder.start(method, scheme)
        self.scheme = scheme
        #: The declared request body size, or, without one, the counting wsgi.input the
        #: app was given; None when request_size is off.
        self.request_size: int | _CountingInput | None = (
            _request_size(environ) if counted and middleware._request_size else None
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

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        """The ``start_response`` the app gets."""
        # Called again with exc_info when the app replaces a failed response. The server's
        # call goes first: if it refuses (headers already sent, it re-raises the app's
        # exception), the status on the wire is still the earlier one.
        header = self.id_header
        if header is not None:
            # The header added unless the app set it itself; in a new list, as the app's
            # may be reused (a module-level constant).
            name, initials = self.middleware._id_name
            size = len(name)
            for key, _ in headers:
                # The initial screens before lower() ("Content-Type" is as long as
                # "X-Request-ID", and in nearly every response).
                if len(key) == size and key[0] in initials and key.lower() == name:
                    break
            else:
                headers = [*headers, header]
        if exc_info is None:
            write = self.server_start_response(status, headers)
        else:
            write = self.server_start_response(status, headers, exc_info)
            self.exc = exc_info[1]
        self.headers = headers
        if self.span_ids is None and self.middleware._span_lookup:
            # The app calls start_response inside its own call (or its first iteration),
            # while an OpenTelemetry middleware's span is current, outside us or inside;
            # at close() the server may be back in another context.
            self._read_span()
        try:
            self.status = int(status[:3])
        except (TypeError, ValueError):
            self.status = -1  # labelled "other"; the server will reject it anyway
        if self.route is None and self.counted:
            # MetricsMiddleware._route inlined (a call fewer per request).
            resolver = self.middleware._route_resolver
            if resolver is None:
                self.route = UNMATCHED_ROUTE
            else:
                try:
                    route = resolver(self.environ)
                    self.route = route if isinstance(route, str) else UNMATCHED_ROUTE
                except Exception as exc:
                    self.middleware.recorder.failures.report("route lookup", exc)
                    self.route = UNMATCHED_ROUTE
        return write

    def _read_span(self) -> None:
        """Read the current sampled span: its IDs are the exemplar, and it gets the
        correlation ID as an attribute (when each is on)."""
        middleware = self.middleware
        header = self.id_header
        self.span_ids = read_span(
            None if header is None or not middleware._span_attribute else header[1],
            middleware._exemplars,
            middleware.recorder.failures,
        )

    def release(self) -> None:
        """Reset the correlation ID: the request is over (the server closed its body)."""
        token = self.token
        if token is not None:
            self.token = None
            reset_correlation_id(token)

    def answer_error(
        self, start_response: StartResponse, exc: Exception
    ) -> Iterable[bytes] | None:
        """Send the 500 for an exception the app raised from its call, with the correlation
        header (see the module docs for why here); ``None`` when it must be re-raised as is
        (an outer layer answers it, or the server refuses: the headers already went out
        through ``write()``)."""
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
        return _ErrorBody(self, exc)

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
        self.response_size = _content_length(self.headers)
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
            if self.token is not None:
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
            if exc is not None:
                self.middleware.recorder.exception(self.method, self.route or "", exc)
            return
        self.done = True
        if not self.counted:
            return
        middleware = self.middleware
        recorder = middleware.recorder
        route = self.route
        if route is None:
            route = self.route = middleware._route(self.environ)
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
        duration = (perf_counter() if end is None else end) - self.start
        if self.span_ids is None and not closed and middleware._span_lookup:
            # Never started: recorded from the failing call or iteration, where an outer
            # OpenTelemetry middleware's span is still current (at close() it may not be).
            self._read_span()
        exemplar = self.span_ids
        request_size = self.request_size
        if isinstance(request_size, _CountingInput):
            request_size = request_size.count  # what the app read of a chunked body
        # Positional: this is per request, and keyword arguments cost more.
        recorder.finish(
            self.method, route, status, duration, self.in_flight, exc, self.ttfb,
            request_size, self.response_size, exemplar, self.scheme,
        )


class _SizedExchange(_Exchange):
    """An :class:`_Exchange` whose app iterable has ``len()``: servers may use it."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class _MeasuringExchange(_Exchange):
    """An :class:`_Exchange` that times the first chunk and counts the bytes."""

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


class _SizedMeasuringExchange(_MeasuringExchange):
    """A :class:`_MeasuringExchange` whose app iterable has ``len()``."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]


class _ErrorBody:
    """The middleware's own 500 body: yields it, then raises the app's exception, so the
    server logs it as a failure after the headers (see the module docs)."""

    __slots__ = ("_exc", "_request")

    def __init__(self, request: _Exchange, exc: Exception) -> None:
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


def _request_size(environ: Environ) -> int | _CountingInput:
    """The request body size ``CONTENT_LENGTH`` declares; without one (a chunked body),
    a :class:`_CountingInput` installed as ``wsgi.input`` to count what the app reads."""
    declared = declared_length(environ.get("CONTENT_LENGTH"))
    if declared is not None:
        return declared
    stream = environ.get("wsgi.input")
    if stream is None:
        return 0
    counting = _CountingInput(stream)
    environ["wsgi.input"] = counting
    return counting


class _CountingInput:
    """``wsgi.input`` as the app gets it when ``request_size`` is on and the request
    declares no ``Content-Length`` (a chunked body, which gunicorn and Werkzeug's server
    decode for the app): the server's stream, with the bytes every read returns counted.

    The app gets the server's own stream in every other case: the house rule is that the
    app gets what the server gave, and without a declared size there is no other way to
    know the body's size. ``read``, ``readline``, ``readlines``, iteration and ``next()``
    are counted, and so are ``readinto``, ``readinto1`` and ``read1`` when the server's
    stream has them (Werkzeug's ``LimitedStream`` reads through ``readinto``); every other
    attribute (``close``, ``fileno``, ...) is the server stream's own. What the app never
    reads is not counted: the server has not received it either.
    """

    __slots__ = ("_stream", "count")

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        #: Bytes the app has read so far.
        self.count = 0

    def _add(self, data: Any) -> None:
        try:  # noqa: SIM105 (per read: suppress() costs more)
            self.count += len(data)
        except TypeError:  # not bytes: the server's stream is broken, not ours to judge
            pass

    def read(self, *args: Any, **kwargs: Any) -> Any:
        data = self._stream.read(*args, **kwargs)
        self._add(data)
        return data

    def readline(self, *args: Any, **kwargs: Any) -> Any:
        line = self._stream.readline(*args, **kwargs)
        self._add(line)
        return line

    def readlines(self, *args: Any, **kwargs: Any) -> Any:
        lines = self._stream.readlines(*args, **kwargs)
        for line in lines:
            self._add(line)
        return lines

    def __iter__(self) -> Iterator[Any]:
        for line in self._stream:
            self._add(line)
            yield line

    def __next__(self) -> Any:
        line = next(self._stream)
        self._add(line)
        return line

    def __getattr__(self, name: str) -> Any:
        # Only for what the class does not define: the server stream's own attribute, so
        # hasattr() answers as it would for the server's stream.
        if name == "_stream":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        attribute = getattr(self._stream, name)
        if name in ("readinto", "readinto1"):

            def readinto(buffer: Any, *args: Any) -> Any:
                size = attribute(buffer, *args)
                if type(size) is int and size > 0:
                    self.count += size
                return size

            return readinto
        if name == "read1":

            def read1(*args: Any) -> Any:
                data = attribute(*args)
                self._add(data)
                return data

            return read1
        return attribute


def _content_length(headers: Iterable[tuple[str, str]]) -> int | None:
    # A file wrapper's bytes go out through sendfile(), unseen: trust the declared length.
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _framework_resolver(app: object) -> RouteResolver | None:
    """Flask's route lookup when ``app`` is a Flask app's ``wsgi_app`` (or the app)."""
    if "flask" not in sys.modules:  # not imported: it cannot be a Flask app
        return None
    from .flask import resolver_for

    return resolver_for(app)

"""The pure WSGI middleware.

It hands the app's status, headers and response iterable to the server unchanged; it only
looks at them. The app gets the server's ``wsgi.input`` too, except with
``request_size=True`` for a request without ``Content-Length`` (a chunked body): then a
wrapper counts what the app reads (:class:`_CountingInput`), the one way to know its size.
A request is timed from its arrival to the moment the server calls the response
iterable's ``close()`` (PEP 3333 servers always do), so a streaming generator is timed in
full. Werkzeug's test client may never close a response: one it holds is counted by
the next scrape instead (:mod:`wsgi_metrics.held_responses`). The counting itself
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
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from asgi_metrics.core.labels import method_labels
from asgi_metrics.core.request_labels import open_assignments
from asgi_metrics.core.rules import path_filter
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.correlation.context import current_correlation_id
from asgi_metrics.correlation.ids import CorrelationIds
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE
from asgi_metrics.wiring import build
from wsgi_metrics.exchange import (
    Exchange,
    MeasuringExchange,
    Plan,
    SizedExchange,
    SizedMeasuringExchange,
)
from wsgi_metrics.held_responses import HandedResponses, from_test_client
from wsgi_metrics.labels import WsgiHeaders
from wsgi_metrics.types import (
    EXCEPTION_KEY,
    Environ,
    ExcInfo,
    RouteResolver,
    StartResponse,
    WSGIApp,
)

__all__ = [
    "EXCEPTION_KEY",
    "Environ",
    "ExcInfo",
    "MetricsMiddleware",
    "RouteResolver",
    "StartResponse",
    "WSGIApp",
]


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
    Flask's matched rule automatically, wrapping a ``falcon.App`` Falcon's ``uri_template``;
    otherwise every request is ``__unmatched__``.
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
        if not settings.enabled:
            # A pass-through: nothing is built or registered.
            self.__class__ = _Disabled
            return
        parts = build(settings)
        self.recorder = parts.recorder
        self.exposition = parts.exposition
        self._metrics_path = settings.metrics_path
        self._counts = path_filter(settings)
        self._methods = method_labels(settings.exclude_methods)
        # Kept even when the user's resolver wins: Flask's also reports the exceptions
        # Flask turns into 500s, and it lives only as long as this reference.
        self._framework = _framework_resolver(app) if framework is None else framework
        self._correlation = CorrelationIds(settings) if settings.correlation_id else None
        self._plan = Plan(
            self.recorder,
            route_resolver if route_resolver is not None else self._framework,
            parts.exemplars,
            span_attribute=self._correlation is not None and OTEL_AVAILABLE,
            id_name=settings.correlation_header.lower(),
            labels=parts.request_labels(WsgiHeaders()),
        )
        # The body classes (without, with len()): the measuring one only when time to
        # first byte or response size is on, so otherwise no chunk costs anything.
        self._bodies: tuple[type[Exchange], type[Exchange]] = (
            (MeasuringExchange, SizedMeasuringExchange)
            if settings.time_to_first_byte or settings.response_size
            else (Exchange, SizedExchange)
        )
        self._handed = HandedResponses(self.recorder.failures)

    def metrics_app(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        """The WSGI app serving this middleware's metrics (mounted at ``metrics_path``;
        mount it elsewhere too if wanted)."""
        if self._handed:
            self._handed.record_all()
        method = environ.get("REQUEST_METHOD", "GET")
        status, headers, body = self.exposition.respond(
            method,
            environ.get("HTTP_ACCEPT"),
            environ.get("HTTP_ACCEPT_ENCODING"),
            environ.get("HTTP_AUTHORIZATION"),
        )
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [b"" if method == "HEAD" else body]

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        if path == self._metrics_path:
            return self.metrics_app(environ, start_response)
        exchange = self._begin(environ, start_response, path)
        if exchange is None:
            return self.app(environ, start_response)
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
        # What goes back to the server: the exchange around the app's iterable, or the
        # server's own file wrapper with its close() observed.
        wrapper = environ.get("wsgi.file_wrapper")
        body: Iterable[bytes] = result
        if wrapper is None:
            if from_test_client(environ, start_response):
                self._handed.add(exchange)
                body = exchange.hold_assignments(result)
        elif isinstance(wrapper, type) and isinstance(result, wrapper):
            passed = exchange.pass_file(result)
            if passed is not None:
                return passed  # type: ignore[no-any-return]
        exchange.iterable = body
        if hasattr(result, "__len__"):
            # Servers may use len() (a one-item list lets wsgiref set Content-Length), so
            # it stays visible. Same layout, so switching the class is safe and cheaper
            # than a second object.
            exchange.__class__ = self._bodies[1]
        return exchange


    def _begin(
        self, environ: Environ, start_response: StartResponse, path: object
    ) -> Exchange | None:
        """The request's exchange, its correlation ID set; ``None`` when it is neither
        counted nor given an ID, or when reading it failed (served as without us)."""
        correlation = self._correlation
        try:
            method = self._methods(environ.get("REQUEST_METHOD"))
            counted = method is not None and self._counts(path)
            if not counted and self._plan.labels is not None:
                # Its set_label calls go to a dict nobody reads, not to the assignments
                # still current from an earlier request whose response nothing closed
                # (Werkzeug's test client), which would be recorded with them.
                open_assignments()
            if not counted and correlation is None:
                return None
            exchange = self._bodies[0](
                self._plan, environ, start_response, counted, method or ""
            )
            if counted and self._plan.labels is not None:
                exchange.assigned, exchange.assignments = open_assignments()
        except Exception as exc:
            self.recorder.failures.report("reading the request", exc)
            return None
        if correlation is not None:
            try:
                cid = correlation.for_request(
                    environ.get(correlation.environ_key), environ.get("REMOTE_ADDR")
                )
                exchange.token = current_correlation_id.set(cid)
                exchange.id_header = (correlation.header, cid)
            except Exception as exc:
                # Fail open: served without a correlation ID rather than not at all.
                self.recorder.failures.report("reading the request", exc)
        return exchange

class _Disabled(MetricsMiddleware):
    """``enabled=False``: the app, untouched."""

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        return self.app(environ, start_response)


def _framework_resolver(app: object) -> RouteResolver | None:
    """Flask's route lookup when ``app`` is a Flask app's ``wsgi_app`` (or the app),
    Falcon's when it is a ``falcon.App``."""
    # A framework not imported cannot have built the app: nothing of it is imported here.
    if "flask" in sys.modules:
        from wsgi_metrics.flask_routes import resolver_for

        resolver = resolver_for(app)
        if resolver is not None:
            return resolver
    if "falcon" in sys.modules:
        from wsgi_metrics.falcon_routes import resolver_for as falcon_resolver_for

        return falcon_resolver_for(app)
    return None

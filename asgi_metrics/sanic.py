"""Sanic on its own server (``sanic app:app``, ``app.run()``): the extension ``Metrics(app)``.

Sanic's own server is not an ASGI server, so there is no middleware to wrap the app in.
The extension records through the core's :class:`~asgi_metrics.core.recorder.Recorder`
from Sanic's public per-request signals, each dispatched inline in the request's task:

- ``http.lifecycle.handle``: the request is handed to the app (its head is read, its body
  not yet): the clock starts and the request is in flight;
- ``http.lifecycle.exception``: an exception Sanic's error handling is about to turn into a
  response; kept to be counted with the request, unless it is one of Sanic's HTTP
  exceptions (``SanicException``: ``NotFound``, ``abort(...)``), which are responses;
- ``http.lifecycle.response``: the final response (after response middleware), dispatched
  just before its last part goes out; for a streamed response (``await
  request.respond()``) that is after the handler returned, so every chunk it sent is
  timed. The request is recorded here, with its status and the route Sanic's router chose
  (``request.uri_template``, ``/items/<item_id:int>``, blueprint ``url_prefix`` included);
- ``http.lifecycle.complete``: the connection closed; a request still open on it (the
  client went away, or a stream failed after its headers, when Sanic sends no response
  signal) is recorded now, so the in-flight gauge returns to 0.

``/metrics`` is a route of the app (``metrics_path``), rendered in a worker thread
(``loop.run_in_executor``) so a large registry does not stall Sanic's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from sanic import HTTPResponse, Request, Sanic
from sanic.compat import Header
from sanic.exceptions import SanicException

from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS, method_labels
from asgi_metrics.core.recorder import Recorder
from asgi_metrics.core.rules import path_filter, route_or_unmatched
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.exposition.scrape import Exposition, ScrapeRequest
from asgi_metrics.otel.spans import read_span
from asgi_metrics.wiring import build

__all__ = ["CONFIG_KEY", "Metrics"]

#: The ``app.config`` key read by :class:`Metrics`.
CONFIG_KEY = "HTTP_METRICS"
#: Settings this extension does not implement (they need per-message observation or the
#: correlation header, which Sanic's signals do not offer): refused rather than ignored.
UNSUPPORTED = (
    "correlation_id", "request_size", "response_size", "time_to_first_byte", "labels",
    "in_flight_by_route",
)
#: Every method routed to the metrics endpoint, which answers 405 itself to all but GET
#: and HEAD (with ``Allow``), as the other adapters' endpoints do.
_ENDPOINT_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _Open:
    """One counted request in progress."""

    __slots__ = (
        "done", "exc", "http", "in_flight", "method", "request", "scheme", "start",
    )

    def __init__(self, request: Request, method: str, scheme: str, in_flight: object) -> None:
        self.start = perf_counter()
        self.request = request
        self.method = method
        self.scheme = scheme
        self.in_flight = in_flight
        self.exc: BaseException | None = None
        self.done = False
        #: Sanic's connection stream (``request.stream``, which Sanic clears when the
        #: request ends): it still knows the response started when the client left.
        self.http = request.stream


def _template(request: Request) -> str | None:
    return request.uri_template  # None when the router matched nothing


def _key(request: Request) -> int:
    # One request at a time per HTTP/1.1 connection: keyed by the connection, so its
    # "complete" signal finds the request still open on it.
    conn = request.conn_info
    return id(request if conn is None else conn)


class Metrics:
    """The Sanic extension: ``Metrics(app, **options)``, before the app starts.

    Settings come from ``app.config["HTTP_METRICS"]`` (a dict with the same keys as the
    middleware's keyword options), with ``options`` given here taking precedence, over
    ``HTTP_METRICS_*`` environment variables. :data:`UNSUPPORTED` settings raise
    :class:`~asgi_metrics.ConfigurationError`. Registers four signal handlers and, unless
    ``metrics_path`` is ``None``, the ``/metrics`` route (named ``http_metrics``).
    """

    def __init__(self, app: Sanic[Any, Any], **options: Any) -> None:
        configured = app.config.get(CONFIG_KEY) or {}
        if not isinstance(configured, Mapping):
            raise ConfigurationError(
                f"app.config[{CONFIG_KEY!r}]: expected a dict of settings, got {configured!r}"
            )
        self.settings = settings = Settings.build({**configured, **options})
        for name in UNSUPPORTED:
            if getattr(settings, name):
                raise ConfigurationError(
                    f"setting {name!r}: not supported by the Sanic extension"
                )
        if not settings.enabled:
            return  # nothing registered: Sanic serves the app as without us
        parts = build(settings)
        self.recorder: Recorder = parts.recorder
        self.exposition: Exposition = parts.exposition
        self._exemplars = parts.exemplars
        self._counts = path_filter(settings)
        self._methods = method_labels(settings.exclude_methods)
        self._metrics_path = settings.metrics_path
        self._wants_scheme = self.recorder.otel is not None
        self._open: dict[int, _Open] = {}
        app.signal("http.lifecycle.handle")(self._on_handle)
        app.signal("http.lifecycle.exception")(self._on_exception)
        app.signal("http.lifecycle.response")(self._on_response)
        app.signal("http.lifecycle.complete")(self._on_complete)
        if self._metrics_path is not None:
            app.add_route(
                self._serve_metrics, self._metrics_path, methods=_ENDPOINT_METHODS,
                name="http_metrics",
            )

    # -- the signals (each fail-open: a failure is logged, the request goes on) ----------

    async def _on_handle(self, request: Request) -> None:
        try:
            path = request.path
            if path == self._metrics_path or not self._counts(path):
                return
            method = self._methods(request.method)
            if method is None:
                return
            scheme = request.scheme if self._wants_scheme else "http"
            state = _Open(request, method, scheme, self.recorder.start(method, scheme))
            previous = self._open.get(_key(request))
            if previous is not None:
                self._finish(previous, CLIENT_CLOSED_STATUS)
            self._open[_key(request)] = state
        except Exception as exc:
            self.recorder.failures.report("reading the request", exc)

    async def _on_exception(self, request: Request, exception: BaseException) -> None:
        try:
            state = self._open.get(_key(request))
            if state is None or state.request is not request:
                return
            if isinstance(exception, SanicException):
                return
            if state.done:  # after the request was recorded (its last send failed)
                self.recorder.exception(state.method, self._route(request), exception)
                return
            if state.exc is None:
                state.exc = exception
            if request.responded:
                # The response has started: Sanic will not send it again, nor signal it.
                self._finish(state, _started_status(state.http))
        except Exception as exc:
            self.recorder.failures.report("recording a request", exc)

    async def _on_response(self, request: Request, response: HTTPResponse) -> None:
        state = self._open.get(_key(request))
        if state is not None and state.request is request and not state.done:
            self._finish(state, response.status)

    async def _on_complete(self, conn_info: object) -> None:
        state = self._open.pop(id(conn_info), None)
        if state is not None and not state.done:
            self._finish(state, _started_status(state.http) or CLIENT_CLOSED_STATUS)

    # -- recording -----------------------------------------------------------------------

    def _route(self, request: Request) -> str:
        return route_or_unmatched(self.recorder.failures, _template, request)

    def _finish(self, state: _Open, status: int) -> None:
        state.done = True
        request = state.request
        if self._open.get(_key(request)) is state:
            del self._open[_key(request)]
        exemplar = read_span(None, True, self.recorder.failures) if self._exemplars else None
        self.recorder.finish(
            state.method, self._route(request), status, perf_counter() - state.start,
            state.in_flight, state.exc, None, None, None, exemplar, state.scheme,
        )

    # -- /metrics ------------------------------------------------------------------------

    async def _serve_metrics(self, request: Request) -> HTTPResponse:
        exposition = self.exposition
        headers = request.headers
        answer = exposition.prepare(
            request.method, headers.get("accept"), headers.get("accept-encoding"),
            headers.get("authorization"),
        )
        if isinstance(answer, ScrapeRequest):
            scrape = answer
            if not exposition.admit():
                answer = exposition.busy()
            else:
                try:
                    loop = asyncio.get_running_loop()
                    body = await loop.run_in_executor(None, exposition.shared_body, scrape)
                    answer = exposition.answer(scrape, body)
                finally:
                    exposition.release()
        status, pairs, body = answer
        content_type = None
        kept: list[tuple[str, str]] = []
        for name, value in pairs:
            lower = name.lower()
            if lower == "content-type":
                content_type = value
            elif lower != "content-length":  # Sanic sets it from the body
                kept.append((name, value))
        # HEAD: Sanic sends the headers of this body (its Content-Length) without it.
        return HTTPResponse(body, status=status, headers=Header(kept), content_type=content_type)


def _started_status(http: object) -> int:
    """The status of the response already started on Sanic's stream ``http``, or 0."""
    response = getattr(http, "response", None)  # the one sent (or being sent)
    status = getattr(response, "status", 0)
    return status if isinstance(status, int) else 0

"""A plain WSGI app for the correlation ID tests, in process and under Werkzeug's server:
``/echo`` answers (and logs with) the ID it sees, ``/stream`` streams it, ``/boom`` raises
before ``start_response``, ``/missing`` is a 404. :func:`wrap` puts an app (this one by
default) in the middleware with correlation IDs on, each route its first path segment."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from wsgi_metrics import MetricsMiddleware, get_correlation_id
from wsgi_metrics.middleware import Environ, StartResponse

app_log = logging.getLogger("tests.app")


def echo(env: Environ, start_response: StartResponse) -> list[bytes]:
    app_log.info("handling")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [(get_correlation_id() or "-").encode()]


def streamed(env: Environ, start_response: StartResponse) -> Iterator[bytes]:
    # start_response on the first iteration (PEP 3333 allows it): everything here runs
    # while the server consumes the body, after the middleware's call returned.
    start_response("200 OK", [("Content-Type", "text/plain")])
    for part in ("a", "b"):
        app_log.info("chunk %s", part)
        yield f"{part}={get_correlation_id()};".encode()


def boom(env: Environ, start_response: StartResponse) -> list[bytes]:
    app_log.info("about to fail")
    raise RuntimeError("unhandled")


def not_found(env: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"nope"]


def dispatch(env: Environ, start_response: StartResponse) -> Any:
    path = env["PATH_INFO"]
    if path.startswith("/stream"):
        return streamed(env, start_response)
    if path.startswith("/boom"):
        return boom(env, start_response)
    if path.startswith("/missing"):
        return not_found(env, start_response)
    return echo(env, start_response)


def wrap(app: Any = dispatch, **options: Any) -> MetricsMiddleware:
    options.setdefault("registry", CollectorRegistry())
    options.setdefault("route_resolver", lambda env: env["PATH_INFO"].split("/")[1] or None)
    return MetricsMiddleware(app, correlation_id=True, **options)

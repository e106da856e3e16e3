"""A raw WSGI app for the multiprocess exemplar tests: OpenTelemetry's WSGI middleware
outermost (every span sampled), ours inside it. ``/r/{n}`` (``n`` < 12, each its own route
template, so each keeps its own exemplars) answers ``<worker pid> <trace id>``."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider

from wsgi_metrics import MetricsMiddleware

ROUTES = 12
StartResponse = Callable[..., Any]


def _route(environ: dict[str, Any]) -> str | None:
    path = str(environ.get("PATH_INFO", "/"))
    if path.startswith("/r/") and path[3:].isdigit() and int(path[3:]) < ROUTES:
        return path  # one template per n
    return None


def _app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    if _route(environ) is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    trace_id = trace.get_current_span().get_span_context().trace_id
    body = f"{os.getpid()} {trace_id:032x}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


app = OpenTelemetryMiddleware(
    MetricsMiddleware(_app, route_resolver=_route), tracer_provider=TracerProvider()
)

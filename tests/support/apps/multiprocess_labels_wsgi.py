"""A raw WSGI app for the multiprocess self-metrics test: a request-derived label with an
allow-list (``X-Plan``: ``free`` or ``pro``, anything else folded into ``__other__`` and
counted), ``/pid`` answering the worker's PID."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from wsgi_metrics import MetricsMiddleware, from_header

StartResponse = Callable[..., Any]


def _app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


app = MetricsMiddleware(
    _app,
    route_resolver=lambda environ: "/pid" if environ.get("PATH_INFO") == "/pid" else None,
    labels={"plan": from_header("X-Plan", allowed=["free", "pro"], default="free")},
)

"""A tiny raw WSGI app for the multiprocess tests (gunicorn sync and gthread workers),
instrumented by :class:`wsgi_metrics.MetricsMiddleware` with a ``route_resolver``, and with
the same endpoints as :mod:`tests.support.apps.multiprocess_asgi`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from wsgi_metrics import MetricsMiddleware

StartResponse = Callable[..., Any]


def _route(path: str) -> tuple[str | None, int, bytes, float]:
    """(route template or None, status, body, seconds to sleep) for ``path``."""
    if path == "/pid":
        return "/pid", 200, str(os.getpid()).encode(), 0.0
    if path.startswith("/sleep/") and path[7:].isdigit():
        return "/sleep/{ms}", 200, b"slept", int(path[7:]) / 1000
    if path == "/fail":
        return "/fail", 500, b"failed", 0.0
    if path.startswith("/flaky/") and path[7:].isdigit():
        return "/flaky/{n}", 500 if int(path[7:]) % 4 == 0 else 200, b"flaky", 0.0
    if path == "/boom":
        return "/boom", 500, b"boom", 0.0
    if path == "/hang":
        return "/hang", 200, b"woke", 60.0
    return None, 404, b"not found", 0.0


def _app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    route, status, body, pause = _route(path)
    if route == "/boom":
        raise RuntimeError("always fails")
    if route == "/hang":
        with open(os.environ["HANG_PID_FILE"], "w") as file:
            file.write(str(os.getpid()))
    if pause:
        time.sleep(pause)
    start_response(f"{status} X", [("Content-Length", str(len(body)))])
    return [body]


app = MetricsMiddleware(
    _app, route_resolver=lambda environ: _route(environ.get("PATH_INFO", "/"))[0]
)

"""A tiny raw WSGI app for the multiprocess tests (gunicorn sync and gthread workers).

It records through the framework-agnostic core (:class:`asgi_metrics.recorder.Recorder`)
the way a WSGI adapter does, with the same endpoints as :mod:`tests.apps.asgi_app`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from asgi_metrics.labels import UNMATCHED_ROUTE
from asgi_metrics.recorder import Recorder
from asgi_metrics.settings import Settings

recorder = Recorder(Settings.build({}))
StartResponse = Callable[..., Any]


def _route(path: str) -> tuple[str, int, bytes, float]:
    """(route template, status, body, seconds to sleep) for ``path``."""
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
        with open(os.environ["HANG_PID_FILE"], "w") as file:
            file.write(str(os.getpid()))
        return "/hang", 200, b"woke", 60.0
    return UNMATCHED_ROUTE, 404, b"not found", 0.0


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        status, headers, body = recorder.exposition.respond(
            environ["REQUEST_METHOD"], environ.get("HTTP_ACCEPT"),
            environ.get("HTTP_ACCEPT_ENCODING"),
        )
        start_response(f"{status} X", headers)
        return [body]
    start = perf_counter()
    method = recorder.method(environ.get("REQUEST_METHOD"))
    in_flight = recorder.start(method)
    route, status, body, pause = _route(path)
    if pause:
        time.sleep(pause)
    start_response(f"{status} X", [("Content-Length", str(len(body)))])
    exc = RuntimeError("always fails") if route == "/boom" else None
    recorder.finish(method, route, status, perf_counter() - start, in_flight=in_flight, exc=exc)
    return [body]

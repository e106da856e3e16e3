"""Drive a WSGI app in-process: synthetic environ, a start_response that discards, the
returned iterable fully consumed and closed (as a server does)."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks._harness import clock

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

HIT_PATH = "/users/42"
HIT_BODY = b"user 42"

ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": HIT_PATH,
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "50000",
    "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_USER_AGENT": "bench/1.0",
    "HTTP_ACCEPT": "*/*",
    "HTTP_X_TENANT": "acme",  # read by the "one header label" variant
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def _discard(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
    return None


def drive(app: WSGIApp, n: int) -> float:
    """Seconds to serve ``n`` requests (fresh environ and empty body stream each time)."""
    environ, start_response, bytes_io = ENVIRON, _discard, io.BytesIO
    start = clock()
    for _ in range(n):
        env = dict(environ)
        env["wsgi.input"] = bytes_io(b"")
        result = app(env, start_response)
        try:
            for _chunk in result:
                pass
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return clock() - start


def check(app: WSGIApp) -> None:
    """Serve one request and fail loudly if the variant broke the response."""
    seen: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen.append(status)

    env = dict(ENVIRON)
    env["wsgi.input"] = io.BytesIO(b"")
    result = app(env, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not seen or not seen[0].startswith("200") or body != HIT_BODY:
        raise AssertionError(f"bad response: status={seen[:1]} body={body[:60]!r}")


def make_runner(app: WSGIApp) -> Callable[[int], float]:
    return lambda n: drive(app, n)

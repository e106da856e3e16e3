"""A raw WSGI app (``app``, for gunicorn) and the same as raw ASGI (``asgi_app``, for
``uvicorn --workers``) for the process-metrics tests: ``/pid`` answers the worker's PID,
``/spin/{ms}`` burns that much CPU time in the worker (so a worker's CPU counter moves by a
known amount before it is recycled or killed)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from asgi_metrics import MetricsMiddleware as AsgiMetrics
from wsgi_metrics import MetricsMiddleware as WsgiMetrics


def _answer(path: str) -> tuple[str | None, int, bytes]:
    """(route template or None, status, body) for ``path``, doing its work."""
    if path == "/pid":
        return "/pid", 200, str(os.getpid()).encode()
    if path.startswith("/spin/") and path[6:].isdigit():
        end = time.process_time() + int(path[6:]) / 1000
        while time.process_time() < end:
            pass
        return "/spin/{ms}", 200, b"spun"
    return None, 404, b"not found"


def _route(path: str) -> str | None:
    if path == "/pid":
        return "/pid"
    return "/spin/{ms}" if path.startswith("/spin/") else None


def _wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    _, status, body = _answer(environ.get("PATH_INFO", "/"))
    start_response(f"{status} X", [("Content-Length", str(len(body)))])
    return [body]


async def _asgi(scope: dict[str, Any], receive: Callable[..., Any],
                send: Callable[..., Any]) -> None:
    _, status, body = _answer(scope["path"])
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


app = WsgiMetrics(_wsgi, route_resolver=lambda environ: _route(environ.get("PATH_INFO", "/")))
asgi_app = AsgiMetrics(_asgi, route_resolver=lambda scope: _route(scope["path"]))

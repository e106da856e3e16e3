"""A raw WSGI app that reads its request body the way its path says, for the request size
tests under real servers: ``/body/<how>`` answers with the bytes it read.

Serve ``tests.support.apps.wsgi_body:create_app()`` with ``HTTP_METRICS_REQUEST_SIZE=true``;
importing the module registers nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from wsgi_metrics import MetricsMiddleware

StartResponse = Callable[..., Any]

WAYS = ("read", "read-sized", "readline", "readlines", "iterate", "next", "ignore")


def read_body(stream: Any, how: str) -> bytes:
    """Read ``stream`` (a ``wsgi.input``) to its end as ``how`` says (``ignore``: not at
    all)."""
    parts: list[bytes] = []
    if how == "read":
        parts.append(stream.read())
    elif how == "read-sized":
        while chunk := stream.read(4):
            parts.append(chunk)
    elif how == "readline":
        while line := stream.readline():
            parts.append(line)
    elif how == "readlines":
        parts.extend(stream.readlines())
    elif how == "iterate":
        parts.extend(line for line in stream)
    elif how == "next":
        while True:
            try:
                parts.append(next(stream))
            except StopIteration:
                break
    return b"".join(parts)


def inner_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The app without the middleware."""
    how = environ.get("PATH_INFO", "/").removeprefix("/body/")
    if how not in WAYS:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = read_body(environ["wsgi.input"], how)
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def create_app(**options: Any) -> MetricsMiddleware:
    """The app in the middleware, every request labelled ``/body/{how}``."""
    return MetricsMiddleware(inner_app, route_resolver=lambda environ: "/body/{how}", **options)

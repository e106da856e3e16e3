"""``request_size`` in the plain WSGI middleware: the app gets the server's own
``wsgi.input`` unless its bytes must be counted (no declared length)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from wsgi_metrics import MetricsMiddleware


def test_the_app_gets_the_servers_stream_unless_it_must_be_counted() -> None:
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        seen.append(environ["wsgi.input"])
        start_response("200 OK", [])
        return iter([b""])

    server_stream = object()
    for options, content_length, replaced in [
        ({"request_size": True}, "9", False),
        ({"request_size": True}, None, True),
        ({"request_size": True}, "", True),
        ({}, None, False),
        ({"response_size": True}, None, False),
    ]:
        environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.input": server_stream}
        if content_length is not None:
            environ["CONTENT_LENGTH"] = content_length
        middleware = MetricsMiddleware(app, registry=CollectorRegistry(), **options)
        body = middleware(environ, lambda *args: None)
        body.close()  # type: ignore[attr-defined]
        assert (seen.pop() is not server_stream) == replaced, (options, content_length)

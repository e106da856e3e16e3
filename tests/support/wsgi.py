"""Call WSGI apps in process the way a server does, and scrape their /metrics."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from tests.support.scrape import Samples, parse_samples


def environ(path: str = "/", method: str = "GET", **extra: Any) -> dict[str, Any]:
    """A minimal PEP 3333 environ, as a server builds it."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    env.update(extra)
    return env


class InProcessServer:
    """Calls a WSGI app like a server: start_response, iterate, close()."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.body_started = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if exc_info is not None and self.body_started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return lambda data: None

    def call(self, app: Any, env: dict[str, Any]) -> bytes:
        result = app(env, self.start_response)
        try:
            chunks = []
            for chunk in result:
                self.body_started = True
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def get(app: Any, path: str = "/", method: str = "GET", **extra: Any) -> tuple[str, bytes]:
    server = InProcessServer()
    body = server.call(app, environ(path, method, **extra))
    assert server.status is not None
    return server.status, body


def scrape_samples(app: Any, path: str = "/metrics") -> Samples:
    status, body = get(app, path)
    assert status.startswith("200"), status
    return parse_samples(body.decode())


def chunks_of(iterable: Iterable[bytes]) -> list[bytes]:
    return list(iterable)

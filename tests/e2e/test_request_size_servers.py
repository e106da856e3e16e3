"""``request_size`` of chunked bodies (no ``Content-Length``) under real servers: the bytes
the app read. Flask under Werkzeug's threaded server; a plain WSGI app reading its body
in each way under Werkzeug's server and gunicorn."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from werkzeug.serving import make_server

from tests.support.apps.flask_body import flask_app
from tests.support.apps.wsgi_body import WAYS, create_app
from tests.support.bodies import BODY, CHUNKS, size_of
from tests.support.scrape import parse_samples
from tests.support.servers import Server, gunicorn


def recorded(metrics: Callable[[], str], counts: dict[str, int]) -> Any:
    """Scrape until every ``POST route`` has its request count (a real server closes, and
    so records, a response a moment after its bytes went out), bounded to 5 s; then the
    samples, to check exactly."""
    deadline = time.monotonic() + 5
    while True:
        samples = parse_samples(metrics())
        if all(size_of(samples, route)[1] >= count for route, count in counts.items()):
            return samples
        if time.monotonic() > deadline:
            return samples  # the exact assertions then say what is missing
        time.sleep(0.05)


class Serving:
    """A WSGI app under Werkzeug's threaded server on 127.0.0.1 (it decodes chunked
    request bodies, setting ``wsgi.input_terminated``)."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Serving:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()

    def request(self, method: str, path: str, body: Iterable[bytes] | bytes | None = None
                ) -> tuple[int, bytes]:
        return send(self.server.port, method, path, body)


def send(
    port: int, method: str, path: str, body: Iterable[bytes] | bytes | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection; an iterable body goes out chunked (http.client
    sends ``Transfer-Encoding: chunked`` and no ``Content-Length`` for it)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("max_content_length", [None, 1_000_000])
def test_flask_chunked_body_counts_what_the_app_read(max_content_length: int | None) -> None:
    # With MAX_CONTENT_LENGTH Werkzeug reads through a LimitedStream, which uses the
    # stream's readinto(); without it the app reads our stream directly.
    app = flask_app(max_content_length)
    paths = ["/data", "/lines", "/readlines", "/readline"]
    with Serving(app) as server:
        for path in paths:
            assert server.request("POST", path, iter(CHUNKS)) == (200, BODY)
        assert server.request("POST", "/ignore", iter(CHUNKS))[0] == 200
        assert server.request("POST", "/data", BODY) == (200, BODY)  # declared: 9
        samples = recorded(
            lambda: server.request("GET", "/metrics")[1].decode(),
            {"/data": 2, "/ignore": 1, **{path: 1 for path in paths[1:]}},
        )
    for path in paths[1:]:
        assert size_of(samples, path) == (9, 1), path
    assert size_of(samples, "/data") == (18, 2)
    assert size_of(samples, "/ignore") == (0, 1)


# Plain WSGI under real servers --------------------------------------------------------------


def check_every_way(request: Any, metrics: Callable[[], str]) -> None:
    for how in WAYS:
        expected = b"" if how == "ignore" else BODY
        assert request("POST", f"/body/{how}", iter(CHUNKS)) == (200, expected), how
    # Declared: counted whether read or not.
    assert request("POST", "/body/ignore", BODY) == (200, b"")
    samples = recorded(metrics, {"/body/{how}": len(WAYS) + 1})
    # 6 chunked bodies read in full, 1 chunked never read, 1 declared never read.
    assert size_of(samples, "/body/{how}") == (9 * 6 + 0 + 9, len(WAYS) + 1)


def test_wsgi_chunked_body_under_werkzeug() -> None:
    app = create_app(registry=CollectorRegistry(), request_size=True)
    with Serving(app) as server:
        check_every_way(server.request, lambda: server.request("GET", "/metrics")[1].decode())


def test_wsgi_chunked_body_under_gunicorn(tmp_path: Path) -> None:
    # The helpers' gunicorn config is the multiprocess recipe: one worker, its directory.
    argv = gunicorn("tests.support.apps.wsgi_body:create_app()", "-w", "1", "-k", "sync")
    env = {"HTTP_METRICS_REQUEST_SIZE": "true"}
    with Server(argv, env=env, multiproc_dir=str(tmp_path)) as server:
        check_every_way(lambda *args: send(server.port, *args), server.metrics)

"""``request_size`` is what the client sent: the declared ``Content-Length`` whether the app
reads the body or not, and, only without one (a chunked body), the bytes the app read.

Through Starlette and FastAPI (httpx's ASGITransport), Flask (its test client, and
Werkzeug's server for chunked bodies), and plain WSGI under gunicorn and Werkzeug's server.
Django is in ``test_django_integration.py``.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask
from flask import request as flask_request
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from werkzeug.serving import make_server

from asgi_metrics.core.rules import declared_length as declared_body_size
from tests.support.apps.wsgi_body import WAYS, create_app
from tests.support.asgi import client, scrape, wrap
from tests.support.scrape import parse_samples, sample
from tests.support.servers import Server, gunicorn
from wsgi_metrics import MetricsMiddleware
from wsgi_metrics.flask import Metrics

BODY = b"ab\ncd\nefg"  # 9 bytes, three lines
CHUNKS = [b"ab\nc", b"d\nef", b"g"]
SIZE_SUM = "http_request_size_bytes_sum"
SIZE_COUNT = "http_request_size_bytes_count"


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


def post_labels(route: str) -> dict[str, str]:
    return {"method": "POST", "route": route, "status": "200"}


def size_of(samples: Any, route: str) -> tuple[float, float]:
    """(sum, count) of the request size histogram of ``POST route`` (wsgi_support form)."""
    key = frozenset(post_labels(route).items())
    return samples.get((SIZE_SUM, key), 0.0), samples.get((SIZE_COUNT, key), 0.0)


@pytest.mark.parametrize(
    ("value", "size"),
    [("9", 9), (b"9", 9), (" 12 ", 12), ("0", 0), ("007", 7), (None, None), ("", None),
     ("-1", None), ("+9", None), ("9_0", None), ("9.0", None), ("abc", None),
     ("\u0669", None), ("1" * 5000, None), (9, None)],
)
def test_declared_body_size(value: object, size: int | None) -> None:
    assert declared_body_size(value) == size


# ASGI: Starlette and FastAPI -------------------------------------------------------------


async def ignore(request: Request) -> Response:
    return PlainTextResponse("never read the body")


async def read(request: Request) -> Response:
    return PlainTextResponse(await request.body())


def starlette(**options: Any) -> Any:
    app = Starlette(routes=[Route("/ignore", ignore, methods=["POST"]),
                            Route("/read", read, methods=["POST"])])
    return wrap(app, request_size=True, **options)


async def chunked() -> AsyncIterator[bytes]:
    for chunk in CHUNKS:
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{}, {"response_size": True, "time_to_first_byte": True}])
async def test_asgi_declared_size_counts_even_when_the_app_never_reads(
    options: dict[str, Any],
) -> None:
    app = starlette(**options)
    async with client(app) as http:
        for path in ("/ignore", "/read"):
            response = await http.post(path, content=BODY)
            assert response.status_code == 200
            assert response.request.headers["content-length"] == "9"
    families = await scrape(app)
    for route in ("/ignore", "/read"):
        assert sample(families, SIZE_SUM, post_labels(route)) == 9
        assert sample(families, SIZE_COUNT, post_labels(route)) == 1


@pytest.mark.anyio
async def test_asgi_chunked_body_counts_what_the_app_received() -> None:
    app = starlette()
    async with client(app) as http:
        response = await http.post("/read", content=chunked())
        assert "content-length" not in response.request.headers
        assert response.content == BODY
        # Nothing declared and nothing read: nothing is known to have arrived.
        assert (await http.post("/ignore", content=chunked())).status_code == 200
    families = await scrape(app)
    assert sample(families, SIZE_SUM, post_labels("/read")) == 9
    assert sample(families, SIZE_SUM, post_labels("/ignore")) == 0
    assert sample(families, SIZE_COUNT, post_labels("/ignore")) == 1


@pytest.mark.anyio
async def test_fastapi_endpoint_without_a_body_parameter() -> None:
    api = FastAPI()

    @api.post("/hooks/{name}")
    def hook(name: str) -> dict[str, str]:
        return {"hook": name}  # the body is never read

    app = wrap(api, request_size=True)
    async with client(app) as http:
        assert (await http.post("/hooks/deploy", content=BODY)).status_code == 200
        assert (await http.post("/hooks/deploy", content=b"x" * 1000)).status_code == 200
    families = await scrape(app)
    assert sample(families, SIZE_SUM, post_labels("/hooks/{name}")) == 1009
    assert sample(families, SIZE_COUNT, post_labels("/hooks/{name}")) == 2


# Flask --------------------------------------------------------------------------------------


def flask_app(max_content_length: int | None = None) -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max_content_length

    @app.post("/ignore")
    def ignored() -> str:
        return "never read the body"

    @app.post("/data")
    def data() -> bytes:
        return flask_request.get_data()

    @app.post("/lines")
    def lines() -> bytes:
        return b"".join(line for line in flask_request.stream)

    @app.post("/readlines")
    def readlines() -> bytes:
        return b"".join(flask_request.stream.readlines())

    @app.post("/readline")
    def readline() -> bytes:
        parts = []
        while line := flask_request.stream.readline():
            parts.append(line)
        return b"".join(parts)

    Metrics(app, registry=CollectorRegistry(), request_size=True)
    return app


def test_flask_declared_size_counts_even_when_the_app_never_reads() -> None:
    app = flask_app()
    http = app.test_client()
    assert http.post("/ignore", data=BODY).status_code == 200
    assert http.post("/data", data=BODY).data == BODY
    samples = parse_samples(http.get("/metrics").text)
    assert size_of(samples, "/ignore") == (9, 1)
    assert size_of(samples, "/data") == (9, 1)


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

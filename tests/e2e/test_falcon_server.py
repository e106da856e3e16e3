"""End to end: the Falcon example apps under real servers on 127.0.0.1, gunicorn for the
WSGI app (``falcon.App``) and uvicorn for the ASGI one (``falcon.asgi.App``); known
traffic, one scrape, exact counts sample by sample."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.servers import BIN, Server, http_request, uvicorn


@pytest.fixture(params=["gunicorn-wsgi", "uvicorn-asgi"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    argv = {
        # Single process: not the multiprocess helper's config.
        "gunicorn-wsgi": [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", "-w", "1",
                          "example_apps.falcon_app.wsgi:app"],
        "uvicorn-asgi": uvicorn("example_apps.falcon_app.asgi:app"),
    }[request.param]
    with Server(argv) as running:
        yield running


def test_falcon_example_counts_exactly(server: Server) -> None:
    traffic = [
        ("GET", "/", 200), ("GET", "/api/users/7", 200), ("GET", "/api/users/8", 200),
        ("GET", "/api/users/500", 404), ("GET", "/api/users/abc", 404), ("GET", "/nope", 404),
        ("DELETE", "/api/users/7", 405), ("GET", "/api/boom", 500), ("GET", "/healthz", 200),
    ]
    for method, path, status in traffic:
        assert http_request(server, path, method)[0] == status, (method, path)
    status, body = http_request(server, "/api/stream")
    assert (status, body) == (200, b"chunk 0\nchunk 1\nchunk 2\n")
    samples = parse_samples(server.metrics())
    assert requests_by_labels(samples) == {
        ("GET", "/", "200"): 1,
        ("GET", "/api/users/{user_id:int}", "200"): 2,
        ("GET", "/api/users/{user_id:int}", "404"): 1,
        ("GET", "__unmatched__", "404"): 2,
        ("DELETE", "/api/users/{user_id:int}", "405"): 1,
        ("GET", "/api/boom", "500"): 1,
        ("GET", "/api/stream", "200"): 1,
    }
    assert exceptions_by_labels(samples) == {("GET", "/api/boom", "RuntimeError"): 1}
    assert duration_sum(samples, "GET", "/api/stream", "200") >= 0.3 * 0.9
    assert in_flight(samples) == 0

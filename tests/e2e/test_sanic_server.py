"""End to end: the Sanic example app on Sanic's own server (the ``sanic`` CLI, one worker)
on 127.0.0.1; known traffic, one scrape, exact counts sample by sample; a client that
leaves mid-stream is recorded and leaves the in-flight gauge."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.scrape import (
    Samples,
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.servers import Server, http_request

SANIC = str(Path(sys.executable).parent / "sanic")


@pytest.fixture
def server() -> Iterator[Server]:
    argv = [SANIC, "example_apps.sanic_app.app:app", "--host", "127.0.0.1", "--port",
            "{port}", "--workers", "1", "--no-motd", "--no-access-logs"]
    with Server(argv) as running:
        yield running


def test_sanic_example_counts_exactly(server: Server) -> None:
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
        ("GET", "/api/users/<user_id:int>", "200"): 2,
        ("GET", "/api/users/<user_id:int>", "404"): 1,
        ("GET", "__unmatched__", "404"): 2,
        ("DELETE", "__unmatched__", "405"): 1,
        ("GET", "/api/boom", "500"): 1,
        ("GET", "/api/stream", "200"): 1,
    }
    assert exceptions_by_labels(samples) == {("GET", "/api/boom", "RuntimeError"): 1}
    assert duration_sum(samples, "GET", "/api/stream", "200") >= 0.3 * 0.9
    assert in_flight(samples) == 0


def test_client_leaving_mid_stream_is_recorded(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    samples: Samples = {}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server notices at its next chunk (0.1 s)
        samples = parse_samples(server.metrics())
        if requests_by_labels(samples):
            break
        time.sleep(0.05)
    assert requests_by_labels(samples) == {("GET", "/api/stream", "200"): 1}
    assert in_flight(samples) == 0


def test_two_workers_share_the_multiprocess_directory(tmp_path: Path) -> None:
    argv = [SANIC, "example_apps.sanic_app.app:app", "--host", "127.0.0.1", "--port",
            "{port}", "--workers", "2", "--no-motd", "--no-access-logs"]
    with Server(argv, multiproc_dir=str(tmp_path)) as server:
        for _ in range(20):  # fresh connections: both workers take some
            assert http_request(server, "/api/users/7")[0] == 200
        for _ in range(4):  # whichever worker answers, the sum over both
            samples = parse_samples(server.metrics())
            assert requests_by_labels(samples) == {
                ("GET", "/api/users/<user_id:int>", "200"): 20,
            }
            assert in_flight(samples) == 0

"""End to end through a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.paths import ROOT
from tests.support.scrape import (
    EXCEPTIONS,
    IN_FLIGHT,
    REQUEST,
    Families,
    parse_families,
    request_count,
    sample,
    samples,
)
from tests.support.servers import free_port


class Server:
    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("HTTP_METRICS_")}
        self.process = subprocess.Popen(
            # h11: httptools (uvicorn's choice where installed) answers an unknown method
            # such as FOO with its own 400, before the app (tests/e2e/test_server_matrix.py
            # runs httptools).
            [sys.executable, "-m", "uvicorn", "tests.support.apps.fastapi_served:app",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--http", "h11", *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str = "/metrics") -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"uvicorn exited: {output}")
            try:
                self.request("GET", path)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("uvicorn did not start")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def scrape(self, path: str = "/metrics") -> Families:
        status, body = self.request("GET", path)
        assert status == 200, body
        return parse_families(body.decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def test_known_traffic_through_uvicorn(server: Server) -> None:
    for item_id in range(5):
        assert server.request("GET", f"/v1/items/{item_id}")[0] == 200
    assert server.request("POST", "/v1/items", b"{}")[0] == 200
    assert server.request("DELETE", "/v1/items/1")[0] == 405
    assert server.request("GET", "/v1/items/not-a-number")[0] == 422
    assert server.request("GET", "/nope/123")[0] == 404
    assert server.request("GET", "/v1/items/1/")[0] == 307
    assert server.request("FOO", "/v1/items/1")[0] == 405
    status, body = server.request("GET", "/stream?chunks=4")
    assert (status, len(body)) == (200, 4096)
    assert server.request("GET", "/boom")[0] == 500
    families = server.scrape()
    assert request_count(families, "/v1/items/{item_id}") == 5
    assert request_count(families, "/v1/items", "POST") == 1
    assert request_count(families, "/v1/items/{item_id}", "DELETE", "405") == 1
    assert request_count(families, "/v1/items/{item_id}", status="422") == 1
    assert request_count(families, "/v1/items/{item_id}", "_OTHER", "405") == 1
    assert request_count(families, "__unmatched__", status="404") == 1
    assert request_count(families, "__unmatched__", status="307") == 1
    assert request_count(families, "/stream") == 1
    assert request_count(families, "/boom", status="500") == 1
    assert sample(families, EXCEPTIONS, {"method": "GET", "route": "/boom",
                                         "exception_type": "RuntimeError"}) == 1
    assert sum(value for _, value in samples(families, REQUEST)) == 13
    assert sum(value for _, value in samples(families, IN_FLIGHT)) == 0


def raw_request_then_close(port: int, path: str, read_first: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        if read_first:
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        else:
            time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def test_client_disconnecting_mid_request_is_never_a_5xx(server: Server) -> None:
    # Gone before the response: the app notices while waiting.
    raw_request_then_close(server.port, "/wait-for-disconnect", read_first=False)
    # Gone mid-stream: the response had started.
    raw_request_then_close(server.port, "/stream?chunks=200&delay=0.01", read_first=True)
    deadline = time.monotonic() + 10
    while True:
        families = server.scrape()
        statuses = {(labels["route"], labels["status"])
                    for labels, _ in samples(families, REQUEST)}
        routes_seen = {route for route, _ in statuses}
        done = sum(value for _, value in samples(families, IN_FLIGHT)) == 0
        if done and {"/wait-for-disconnect", "/stream"} <= routes_seen:
            break
        assert time.monotonic() < deadline, (statuses, samples(families, IN_FLIGHT))
        time.sleep(0.05)
    assert statuses == {("/wait-for-disconnect", "499"), ("/stream", "200")}
    assert not any(status.startswith("5") for _, status in statuses)


def test_root_path_through_uvicorn() -> None:
    server = Server("--root-path", "/proxy")
    try:
        server.wait_ready("/v1/items/1")
        # The proxy strips /proxy; uvicorn puts it back into the ASGI path.
        assert server.request("GET", "/v1/items/7")[0] == 200
        assert server.request("GET", "/v1/items/8")[0] == 200
        families = server.scrape()
        assert request_count(families, "/v1/items/{item_id}") == 3
        assert {labels["route"] for labels, _ in samples(families, REQUEST)} == {
            "/v1/items/{item_id}"
        }
    finally:
        server.stop()

"""End to end: the Quart example app (the extension) under a real hypercorn on 127.0.0.1,
known traffic, a real scrape: exact counts per rule, unmatched 404/405/redirect, the 500
counted once, in-flight back to 0."""

from __future__ import annotations

import http.client
import time

from tests.support.promtool import check_metrics
from tests.support.scrape import (
    Samples,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.servers import Server, hypercorn

PLAN = [
    ("GET", "/", 200, 2),
    ("GET", "/api/users/1", 200, 3),
    ("GET", "/api/users/500", 404, 1),
    ("POST", "/api/users/1", 405, 1),
    ("GET", "/api/boom", 500, 2),
    ("GET", "/api/stream", 200, 2),
    ("GET", "/missing", 404, 1),
    ("GET", "/healthz", 200, 3),  # excluded by app.config["HTTP_METRICS"]
]
EXPECTED = {
    ("GET", "/", "200"): 2,
    ("GET", "/api/users/<int:user_id>", "200"): 3,
    ("GET", "/api/users/<int:user_id>", "404"): 1,
    ("POST", "__unmatched__", "405"): 1,
    ("GET", "/api/boom", "500"): 2,
    ("GET", "/api/stream", "200"): 2,
    ("GET", "__unmatched__", "404"): 1,
}


def call(server: Server, method: str, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def scrape_until(server: Server, expected: dict[tuple[str, str, str], float]) -> Samples:
    # A response is recorded when its last body message is handed to the server, which
    # may be a moment after the client read it.
    deadline = time.monotonic() + 5
    while True:
        samples = parse_samples(server.metrics())
        if requests_by_labels(samples) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


def test_quart_under_hypercorn() -> None:
    with Server(hypercorn("example_apps.quart_app.app:app")) as server:
        for method, path, status, times in PLAN:
            for _ in range(times):
                assert call(server, method, path) == status, (method, path)
        samples = scrape_until(server, EXPECTED)
        text = server.metrics()
    assert requests_by_labels(samples) == EXPECTED
    assert exceptions_by_labels(samples) == {("GET", "/api/boom", "RuntimeError"): 2}
    assert in_flight(samples) == 0
    check_metrics(text)

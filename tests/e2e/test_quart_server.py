"""End to end: the Quart example app (the extension) under a real hypercorn on 127.0.0.1,
known traffic, a real scrape: exact counts per rule, unmatched 404/405/redirect, the 500
counted once, in-flight back to 0."""

from __future__ import annotations

from tests.support.promtool import check_metrics
from tests.support.scrape import (
    exceptions_by_labels,
    in_flight,
    requests_by_labels,
)
from tests.support.servers import Server, http_request, hypercorn, scrape_until

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


def test_quart_under_hypercorn() -> None:
    with Server(hypercorn("example_apps.quart_app.app:app")) as server:
        for method, path, status, times in PLAN:
            for _ in range(times):
                assert http_request(server, path, method)[0] == status, (method, path)
        samples = scrape_until(server, EXPECTED)
        text = server.metrics()
    assert requests_by_labels(samples) == EXPECTED
    assert exceptions_by_labels(samples) == {("GET", "/api/boom", "RuntimeError"): 2}
    assert in_flight(samples) == 0
    check_metrics(text)

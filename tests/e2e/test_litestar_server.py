"""End to end: the Litestar example app under a real uvicorn on 127.0.0.1, known traffic,
a real scrape: exact counts per template, the 500 counted once, in-flight back to 0."""

from __future__ import annotations

from tests.support.promtool import check_metrics
from tests.support.scrape import (
    exceptions_by_labels,
    in_flight,
    requests_by_labels,
)
from tests.support.servers import Server, http_get, scrape_until, uvicorn

PLAN = [
    ("/", 200, 2),
    ("/api/users/1", 200, 3),
    ("/api/users/1/", 200, 1),  # Litestar serves it as the same route, no redirect
    ("/api/users/500", 404, 1),
    ("/api/boom", 500, 2),
    ("/api/stream", 200, 2),
    ("/missing", 404, 1),
    ("/healthz", 200, 3),  # excluded
]
EXPECTED = {
    ("GET", "/", "200"): 2,
    ("GET", "/api/users/{user_id}", "200"): 4,
    ("GET", "/api/users/{user_id}", "404"): 1,
    ("GET", "/api/boom", "500"): 2,
    ("GET", "/api/stream", "200"): 2,
    ("GET", "__unmatched__", "404"): 1,
}


def test_litestar_under_uvicorn() -> None:
    with Server(uvicorn("example_apps.litestar_app.app:app")) as server:
        for path, status, times in PLAN:
            for _ in range(times):
                assert http_get(server.url + path)[0] == status, path
        samples = scrape_until(server, EXPECTED)
        text = server.metrics()
    assert requests_by_labels(samples) == EXPECTED
    assert exceptions_by_labels(samples) == {("GET", "/api/boom", "RuntimeError"): 2}
    assert in_flight(samples) == 0
    check_metrics(text)

"""The in-flight gauge by route with several workers (multiprocess mode): requests stuck in
a view of any worker show under their route in every worker's scrape while they are stuck,
and leave it once they are answered; totals exact. gunicorn with 3 gthread workers and
``uvicorn --workers 2`` (a WSGI app under uvicorn's WSGI interface would not be native:
the ASGI app has its own e2e in test_request_labels_uvicorn.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from asgi_metrics.multiprocess import collect_directory
from tests.support.scrape import IN_FLIGHT, REQUEST, parse_families, sample, samples
from tests.support.servers import Server, gunicorn, http_get, uvicorn

SERVERS = {
    # More threads than stuck requests: a worker whose threads were all stuck would queue
    # the scrapes it accepts behind them.
    "gunicorn": (gunicorn("tests.support.apps.flask_stuck:app", "-w", "3", "-k", "gthread",
                          "--threads", "8"), "/stuck/<int:n>"),
    "uvicorn": (uvicorn("tests.support.apps.starlette_stuck:app", "--workers", "2"),
                "/stuck/{n}"),
}


def wait_for(server: Server, check: object, timeout: float = 10.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        families = parse_families(server.metrics())
        if check(families) or time.monotonic() > deadline:  # type: ignore[operator]
            return families
        time.sleep(0.1)


@pytest.mark.parametrize("name", sorted(SERVERS))
def test_stuck_requests_of_any_worker_show_under_their_route(tmp_path: Path, name: str) -> None:
    argv, route = SERVERS[name]
    stuck = {"method": "GET", "route": route}
    release = tmp_path / "release"
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {"STUCK_RELEASE": str(release)}
    with Server(argv, env=env, multiproc_dir=str(directory)) as server:
        for n in range(12):
            assert http_get(f"{server.url}/items/{n}")[0] == 200
        answers: list[tuple[int, str]] = []
        clients = [
            threading.Thread(target=lambda n=n: answers.append(http_get(
                f"{server.url}/stuck/{n}", timeout=30)))
            for n in range(4)
        ]
        for client in clients:
            client.start()
        # Every scrape (whichever worker answers it) shows the four under their route.
        families = wait_for(server, lambda f: sample(f, IN_FLIGHT, stuck) == 4.0)
        assert sample(families, IN_FLIGHT, stuck) == 4.0, samples(families, IN_FLIGHT)
        for _ in range(6):
            assert sample(parse_families(server.metrics()), IN_FLIGHT, stuck) == 4.0
        # And a process that served none of them (this one) reads the same from the
        # directory: the stuck workers published their own.
        shown = {
            (s.labels["method"], s.labels["route"]): s.value
            for metric in collect_directory(str(directory)) if metric.name == IN_FLIGHT
            for s in metric.samples
        }
        assert shown[("GET", route)] == 4.0
        release.touch()
        for client in clients:
            client.join(30)
        assert [status for status, _ in answers] == [200] * 4
        families = wait_for(server, lambda f: sample(f, IN_FLIGHT, stuck) == 0.0)
        assert sample(families, IN_FLIGHT, stuck) == 0.0
        assert sample(families, REQUEST, {**stuck, "status": "200"}) == 4.0
        assert sum(value for _, value in samples(families, REQUEST)) == 16.0

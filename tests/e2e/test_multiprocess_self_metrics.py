"""The library's own series in multiprocess mode, end to end: a real ``gunicorn -w 3``
(sync workers) with a request-derived label whose values outside its allow-list are folded.
Every scrape, whichever worker answers it, shows the folds of all workers and counts every
scrape once; a worker killed with ``kill -9`` keeps its counts in the sum.

Bounded in time (every wait has a deadline, the traffic a count); everything started is
stopped."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.scrape import parse_samples
from tests.support.servers import Server, gunicorn

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

FOLDED = ("http_metrics_label_values_folded_total", (("label", "plan"),))
ANSWERED = ("http_metrics_scrapes_total", (("result", "answered"),))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    argv = gunicorn("tests.support.apps.multiprocess_labels_wsgi:app", "-w", "3", "-k", "sync",
                    "--timeout", "60")
    with Server(argv, multiproc_dir=str(directory)) as running:
        yield running


def get_pid(server: Server, plan: str) -> int:
    request = urllib.request.Request(
        server.url + "/pid", headers={"X-Plan": plan, "Connection": "close"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        return int(response.read())


def own_series(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The scrape's samples, labels as sorted tuples."""
    samples = parse_samples(server.metrics())
    return {(name, tuple(sorted(dict(labels).items()))): value
            for (name, labels), value in samples.items()}


def test_every_scrape_shows_every_workers_own_counts(server: Server) -> None:
    folded_by: dict[int, int] = {}
    sent = 0
    while sent < 300 and (sent < 30 or len(folded_by) < 2):  # bounded: 300 requests
        pid = get_pid(server, f"gold-{sent}")
        folded_by[pid] = folded_by.get(pid, 0) + 1
        sent += 1
    get_pid(server, "pro")  # kept: not folded
    assert len(folded_by) >= 2, folded_by

    first = own_series(server)
    assert first[FOLDED] == sent
    # Each later scrape, answered by any worker, counts itself and every one before it.
    for step in range(1, 6):
        series = own_series(server)
        assert series[FOLDED] == sent
        assert series[ANSWERED] == first[ANSWERED] + step

    # kill -9 a worker that folded values: its counts stay in the sum.
    victim = next(iter(folded_by))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in server.worker_pids() or len(server.worker_pids()) < 3:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.1)
    for _ in range(3):
        assert own_series(server)[FOLDED] == sent

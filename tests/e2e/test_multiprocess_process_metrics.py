"""Process metrics for the whole service under real multi-worker servers (``gunicorn -w 3``,
``uvicorn --workers 2``) on loopback: whichever worker answers, the scrape shows every live
worker (checked against the real worker processes in /proc) and the master; the CPU counter
never goes down across ``kill -9`` and ``max_requests`` recycling; the series stay bounded."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_metrics.multiprocess.process_metrics import read_process
from tests.support.servers import Server, gunicorn, http_get, uvicorn

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

APP = "tests.support.apps.process_metrics_app"
SERVERS = {
    "gunicorn-sync-3": (gunicorn(f"{APP}:app", "-w", "3", "-k", "sync", "--timeout", "120"), 3),
    "uvicorn-workers-2": (uvicorn(f"{APP}:asgi_app", "--workers", "2"), 2),
}
#: Per family: {worker label: value}.
Process = dict[str, dict[str, float]]


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    argv, workers = SERVERS[request.param]
    with Server(argv, multiproc_dir=str(tmp_path)) as running:
        running.workers = workers  # type: ignore[attr-defined]
        yield running


def process_families(text: str) -> Process:
    found: Process = {}
    names = []
    for family in text_string_to_metric_families(text):
        names.append(family.name)
        if family.name.startswith("process_"):
            for sample in family.samples:
                found.setdefault(sample.name, {})[sample.labels["worker"]] = sample.value
    assert len(names) == len(set(names)), f"a family shown twice: {names}"
    return found


def live_workers(server: Server, count: int) -> set[int]:
    """The server's worker processes, once there are ``count`` of them (bounded wait):
    multiprocessing's helper processes (uvicorn) left out."""
    deadline = time.monotonic() + 20
    while True:
        pids = {pid for pid in server.worker_pids()
                if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()}
        if len(pids) == count or time.monotonic() > deadline:
            return pids
        time.sleep(0.1)


def spin_every_worker(server: Server, workers: int, ms: int = 30) -> None:
    """Requests that burn CPU time, on fresh connections, until every worker served one
    (bounded: at most 40 per worker)."""
    seen: set[str] = set()
    for _ in range(40 * workers):
        status, _ = http_get(f"{server.url}/spin/{ms}")
        assert status == 200
        seen.add(http_get(f"{server.url}/pid")[1])
        if len(seen) >= workers:
            return


def scrape(server: Server) -> Process:
    return process_families(server.metrics())


def worker_slots(found: Process) -> dict[str, float]:
    """{slot: start time} of the slots that have a live worker now."""
    return {slot: value for slot, value in found["process_start_time_seconds"].items()
            if slot != "master"}


def test_every_scrape_shows_every_live_worker_and_the_master(server: Server) -> None:
    workers: int = server.workers  # type: ignore[attr-defined]
    spin_every_worker(server, workers)
    pids = live_workers(server, workers)
    assert len(pids) == workers
    real = [read_process(pid) for pid in pids]
    master = read_process(server.proc.pid)  # type: ignore[union-attr]
    assert master is not None and all(real)
    for _ in range(6):  # answered by different workers
        found = scrape(server)
        starts = worker_slots(found)
        assert sorted(starts) == [str(index) for index in range(workers)]
        # Every worker accounted for: its start time, as /proc says.
        assert sorted(starts.values()) == sorted(proc.start_time for proc in real if proc)
        assert found["process_start_time_seconds"]["master"] == master.start_time
        # RSS close to /proc's own figure (the workers run the same code: sorted pairs).
        now = sorted(read_process(pid).resident_bytes for pid in pids)  # type: ignore[union-attr]
        shown = sorted(v for k, v in found["process_resident_memory_bytes"].items()
                       if k != "master")
        for ours, theirs in zip(shown, now, strict=True):
            assert abs(ours - theirs) <= max(4 << 20, 0.1 * theirs)
        for family in ("process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                       "process_cpu_seconds_total"):
            assert set(found[family]) == {*starts, "master"}, family
        assert all(value > 0 for value in found["process_open_fds"].values())


def test_cpu_never_goes_down_when_a_worker_is_killed(server: Server) -> None:
    workers: int = server.workers  # type: ignore[attr-defined]
    spin_every_worker(server, workers, ms=100)
    pids = live_workers(server, workers)
    before = scrape(server)["process_cpu_seconds_total"]
    # Work that only the victim does after the last scrape: with gunicorn's child_exit
    # its CPU time is still counted exactly; without it, lost (the documented bound).
    victim = int(http_get(f"{server.url}/pid")[1])
    assert victim in pids
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while True:
        now = live_workers(server, workers)
        if victim not in now and len(now) == workers:
            break
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        time.sleep(0.1)
    spin_every_worker(server, workers)
    after = scrape(server)
    cpu = after["process_cpu_seconds_total"]
    for slot, value in before.items():
        assert cpu[slot] >= value, (slot, before, cpu)
    # The replacement took the killed worker's slot: as many slots as workers.
    assert sorted(worker_slots(after)) == [str(index) for index in range(workers)]
    assert set(cpu) == {*worker_slots(after), "master"}
    assert sum(cpu.values()) >= sum(before.values()) + 0.02


def test_cpu_monotonic_and_series_bounded_across_max_requests(tmp_path: Path) -> None:
    argv = gunicorn(f"{APP}:app", "-w", "2", "-k", "sync", "--max-requests", "3")
    with Server(argv, multiproc_dir=str(tmp_path)) as server:
        shown: dict[str, float] = {}
        pids: set[str] = set()
        spun = 0.0
        for _ in range(10):  # 10 rounds of 6 requests: about 20 recycles
            for _ in range(5):
                assert http_get(f"{server.url}/spin/40")[0] == 200
                spun += 0.04
            pids.add(http_get(f"{server.url}/pid")[1])
            cpu = scrape(server)["process_cpu_seconds_total"]
            for slot, value in shown.items():
                assert cpu[slot] >= value, (slot, shown, cpu)
            assert set(cpu) <= {"0", "1", "master"}, cpu
            shown = cpu
        assert len(pids) >= 6, "workers were not recycled"
        # The recycled workers' CPU time is all kept: at least what the requests burnt.
        assert sum(v for k, v in shown.items() if k != "master") >= spun
        state = (tmp_path / "asgi_metrics.processes.json").read_text()
        assert len(state) < 4096, state  # bounded too

"""Process metrics for the whole service in multiprocess mode, without servers: the slots
(reuse, retired CPU time, bounded series), /proc read as prometheus_client reads it, and a
directory of real child processes scraped as they come and go. Under real servers:
tests/e2e/test_multiprocess_process_metrics.py."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector

from asgi_metrics.multiprocess.directory import (
    DirectoryCollector,
    child_exit,
    clean_multiproc_dir,
    collect_directory,
)
from asgi_metrics.multiprocess.process_metrics import (
    EXIT_PREFIX,
    STATE_FILE,
    Slots,
    collect_processes,
    read_process,
)
from tests.support.multiprocess import dead_pid, values, write_worker

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")


# -- the slots --------------------------------------------------------------------------


def test_a_new_worker_takes_the_lowest_free_slot_and_keeps_its_cpu() -> None:
    slots = Slots()
    slots.advance({(10, 1): 1.0, (11, 1): 2.0}, {})
    assert [(s.pid, s.total_cpu) for s in slots.slots] == [(10, 1.0), (11, 2.0)]
    # Worker 10 was recycled (last seen at 1.5 s) and 12 took its place.
    slots.advance({(10, 1): 1.5, (11, 1): 2.5}, {})
    slots.advance({(12, 9): 0.25, (11, 1): 3.0}, {})
    assert [(s.pid, s.retired, s.total_cpu) for s in slots.slots] == [
        (12, 1.5, 1.75), (11, 0.0, 3.0)]


def test_pid_reused_by_a_new_process_is_a_new_worker() -> None:
    slots = Slots()
    slots.advance({(10, 1): 4.0}, {})
    slots.advance({(10, 7): 0.5}, {})  # same PID, another start time
    assert [(s.pid, s.start, s.retired, s.total_cpu) for s in slots.slots] == [
        (10, 7, 4.0, 4.5)]


def test_final_cpu_wins_over_the_last_value_seen_even_when_it_comes_later() -> None:
    slots = Slots()
    slots.advance({(10, 1): 1.0}, {})
    slots.advance({}, {10: 3.0})  # gone; gunicorn measured 3 s when it reaped it
    assert slots.slots[0].total_cpu == 3.0
    slots = Slots()
    slots.advance({(10, 1): 1.0}, {})
    slots.advance({}, {})  # a scrape saw it gone first: last seen, 1 s
    assert slots.slots[0].total_cpu == 1.0
    slots.advance({(11, 2): 0.5}, {10: 3.0})  # the exact figure arrives: 2 s more
    assert slots.slots[0].total_cpu == 3.5
    slots.advance({(11, 2): 0.5}, {10: 3.0})  # never added twice
    assert slots.slots[0].total_cpu == 3.5


def test_a_worker_never_seen_by_a_scrape_is_counted_in_a_free_slot() -> None:
    slots = Slots()
    slots.advance({(10, 1): 1.0, (11, 1): 1.0}, {})
    slots.advance({(11, 1): 1.0, (13, 3): 0.5}, {12: 2.0})  # 10 -> 12 -> 13 in between
    assert [(s.pid, s.total_cpu) for s in slots.slots] == [(13, 3.5), (11, 1.0)]


def test_cpu_never_goes_down_and_slots_stay_bounded_over_many_recycles() -> None:
    rng = random.Random(16)
    slots = Slots()
    workers: dict[tuple[int, int], float] = {(pid, 0): 0.0 for pid in range(4)}
    next_pid, shown = 4, [0.0] * 4
    for step in range(2000):
        for key in workers:
            workers[key] += rng.choice((0.0, 0.01, 0.25))
        finals: dict[int, float] = {}
        for key in list(workers):
            if rng.random() < 0.2:  # recycled or killed; the exact figure sometimes known
                cpu = workers.pop(key) + rng.choice((0.0, 0.1))
                if rng.random() < 0.5:
                    finals[key[0]] = cpu
                workers[(next_pid, step)] = 0.0
                next_pid += 1
        slots.advance(dict(workers), finals)
        slots = Slots.from_json(slots.to_json())  # as kept in the directory
        assert len(slots.slots) <= 4 + 4  # at most the workers alive, plus unseen exits
        totals = [slot.total_cpu for slot in slots.slots]
        for index, before in enumerate(shown):
            assert totals[index] >= before, (step, index)
        shown = totals
    assert len(slots.slots) == 4 or all(s.pid is not None for s in slots.slots[:4])


# -- reading /proc, as prometheus_client does -------------------------------------------


def _worker(megabytes: int = 0) -> subprocess.Popen[bytes]:
    """A live Python process that holds ``megabytes`` of memory, has used some CPU time,
    and waits on its stdin (started: it said so)."""
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         f"x = bytearray({megabytes << 20}); x[::4096] = b'1' * len(x[::4096])\n"
         "end = time.process_time() + 0.05\n"
         "while time.process_time() < end: pass\n"
         "print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three live workers holding 8, 16 and 32 MB."""
    procs = [_worker(size) for size in (8, 16, 32)]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _process_collector(pid: int) -> dict[str, float]:
    registry = CollectorRegistry()
    ProcessCollector(pid=lambda: pid, registry=registry)
    return {sample.name: sample.value
            for metric in registry.collect() for sample in metric.samples}


def test_read_process_agrees_with_prometheus_client() -> None:
    ours = read_process(os.getpid())
    theirs = _process_collector(os.getpid())
    assert ours is not None
    assert ours.start_time == theirs["process_start_time_seconds"]
    assert ours.max_fds == theirs["process_max_fds"]
    assert ours.open_fds is not None
    assert abs(ours.open_fds - theirs["process_open_fds"]) <= 2
    assert abs(ours.resident_bytes - theirs["process_resident_memory_bytes"]) < 4 << 20
    assert ours.cpu_seconds <= theirs["process_cpu_seconds_total"] + 0.05
    assert read_process(dead_pid()) is None


def _families(path: Path, pids: list[int]) -> dict[str, dict[str, float]]:
    for pid in pids:
        write_worker(path, pid)
    found: dict[str, dict[str, float]] = {}
    for metric in collect_directory(str(path), process_metrics=True):
        for sample in metric.samples:
            if sample.name.startswith("process_"):
                found.setdefault(sample.name, {})[sample.labels["worker"]] = sample.value
    return found


def test_every_live_worker_is_shown_by_slot(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    pids = [proc.pid for proc in sleepers]
    found = _families(tmp_path, [*pids, dead_pid()])
    # No server parent here (pytest), so no master: one slot per live worker.
    assert set(found["process_start_time_seconds"]) == {"0", "1", "2"}
    real = [read_process(pid) for pid in pids]
    assert all(real)
    assert sorted(found["process_start_time_seconds"].values()) == sorted(
        proc.start_time for proc in real if proc)
    # 8, 16 and 32 MB apart: sorted, each slot's RSS is one worker's, as /proc says.
    for shown, proc in zip(sorted(found["process_resident_memory_bytes"].values()),
                           sorted(proc.resident_bytes for proc in real if proc), strict=True):
        assert abs(shown - proc) < 2 << 20
    assert sorted(found["process_virtual_memory_bytes"].values()) == pytest.approx(
        sorted(proc.virtual_bytes for proc in real if proc), rel=0.05)
    assert set(found["process_max_fds"].values()) == {proc.max_fds for proc in real if proc}
    assert set(found["process_cpu_seconds_total"]) == {"0", "1", "2"}


def test_a_killed_worker_keeps_its_cpu_in_its_slot_and_the_slot_is_reused(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    first = _families(tmp_path, [proc.pid for proc in sleepers])["process_cpu_seconds_total"]
    victim = sleepers[0]
    victim.kill()
    victim.wait()
    replacement = _worker()
    try:
        sleepers.append(replacement)
        second = _families(tmp_path, [replacement.pid])
        cpu = second["process_cpu_seconds_total"]
        assert set(cpu) == {"0", "1", "2"}  # the replacement took the free slot
        for slot, before in first.items():
            assert cpu[slot] >= before
        assert sum(cpu.values()) >= sum(first.values())
    finally:
        replacement.kill()


def test_series_stay_bounded_after_many_recycles(tmp_path: Path) -> None:
    shown: dict[str, float] = {}
    for _ in range(25):  # one worker at a time, each leaving its files behind
        proc = _worker()
        try:
            cpu = _families(tmp_path, [proc.pid])["process_cpu_seconds_total"]
        finally:
            proc.kill()
            proc.wait()
        assert set(cpu) == {"0"}
        assert cpu["0"] >= shown.get("0", 0.0)
        shown = cpu
    assert shown["0"] >= 25 * 0.05  # every worker's CPU time, kept across the recycles


def test_child_exit_notes_the_final_cpu_and_the_next_scrape_folds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c",
                             "import time\nend = time.process_time() + 0.3\n"
                             "while time.process_time() < end: pass"])
    proc.wait()  # reaped here, as gunicorn's arbiter does before calling the hook

    class Worker:
        pid = proc.pid

    child_exit(None, Worker())
    assert (tmp_path / f"{EXIT_PREFIX}{proc.pid}.json").exists()
    cpu = collect_processes(str(tmp_path), [])
    totals = {sample.labels["worker"]: sample.value
              for metric in cpu for sample in metric.samples
              if sample.name == "process_cpu_seconds_total"}
    assert totals["0"] >= 0.3
    assert not list(tmp_path.glob(f"{EXIT_PREFIX}*"))
    clean_multiproc_dir(str(tmp_path))
    assert not (tmp_path / STATE_FILE).exists()


def test_directory_collector_leaves_them_to_a_registry_that_has_process_collector(
    tmp_path: Path,
) -> None:
    write_worker(tmp_path, os.getpid())
    with_process = CollectorRegistry()
    ProcessCollector(registry=with_process)
    DirectoryCollector(str(tmp_path), registry=with_process)  # no "Duplicated timeseries"
    assert values(with_process.collect())[("process_open_fds", ())] > 0
    fresh = CollectorRegistry()
    DirectoryCollector(str(tmp_path), registry=fresh)
    assert ("process_open_fds", (("worker", "0"),)) in values(fresh.collect())

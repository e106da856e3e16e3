"""Several processes racing on one multiprocess directory: writers announcing a derived
counter while it is read (always whole), and workers dying while four scraper processes
compact their files at once (never a lost or double count). Forked processes, up to 65,
a few seconds on a busy machine: the multi-worker layer."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from asgi_metrics.multiprocess.directory import (
    JOURNAL_FILE,
    announce_derived_counter,
    collect_directory,
    derived_counters,
)
from tests.support.multiprocess import values, write_worker


def _announce_many(directory: str, count: int) -> None:
    for _ in range(count):
        announce_derived_counter(directory, "reqs", "Requests.", "dur")


def test_concurrent_announcements_are_always_read_whole(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_announce_many, args=(str(tmp_path), 300)) for _ in range(3)]
    for proc in writers:
        proc.start()
    reads = 0
    while any(proc.is_alive() for proc in writers) and reads < 20_000:
        found = derived_counters(str(tmp_path))
        assert found in ([], [("reqs", "Requests.", "dur")]), found
        reads += 1
    for proc in writers:
        proc.join(30)
        assert proc.exitcode == 0
    assert derived_counters(str(tmp_path)) == [("reqs", "Requests.", "dur")]
    assert [p.name for p in tmp_path.iterdir()] == ["asgi_metrics.derived.reqs.json"]


def _scrape_many(directory: str, target: float, out: Any) -> None:
    """Scrape (and so compact) until the total reaches ``target`` (or a minute passes)."""
    import time

    totals: list[float] = []
    deadline = time.monotonic() + 60
    while (not totals or totals[-1] < target) and time.monotonic() < deadline:
        found = values(collect_directory(directory))
        totals.append(found.get(("errors_total", (("route", "/a"),)), 0.0))
    out.put(totals)


def _spawn_dead_workers(directory: str, count: int) -> None:
    for _ in range(count):
        # A worker that writes its files (named after its own PID) and exits.
        proc = multiprocessing.get_context("fork").Process(
            target=lambda: write_worker(Path(directory), os.getpid()))
        proc.start()
        proc.join()


def test_compaction_racing_scrapes_never_loses_or_double_counts(tmp_path: Path) -> None:
    """Workers die (leaving files) while several processes scrape and compact at once:
    every scrape's total is one of the true totals (never more than what was written,
    never less than a previous scrape), and the final total is exact."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    scrapers = [ctx.Process(target=_scrape_many, args=(str(tmp_path), 3 * 60, results))
                for _ in range(4)]
    writer = ctx.Process(target=_spawn_dead_workers, args=(str(tmp_path), 60))
    writer.start()
    for proc in scrapers:
        proc.start()
    writer.join(60)
    seen = [results.get(timeout=60) for _ in scrapers]
    for proc in scrapers:
        proc.join(10)
    for totals in seen:
        assert totals[-1] == 3 * 60
        assert len(set(totals)) > 3, "the scrapes did not overlap the compactions"
        assert totals == sorted(totals), "a scrape went backwards"
        assert all(total % 3 == 0 and total <= 3 * 60 for total in totals)
    final = values(collect_directory(str(tmp_path)))
    assert final[("errors_total", (("route", "/a"),))] == 3 * 60
    # Buckets are written 1, 2, 3 (not cumulative): +Inf is 6 per worker.
    assert final[("dur_bucket", (("le", "+Inf"), ("route", "/b")))] == 6 * 60
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / JOURNAL_FILE).exists()

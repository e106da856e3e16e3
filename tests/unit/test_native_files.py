"""The native files of multiprocess mode (asgi_metrics/multiprocess/native_files.py),
written and read in this process: halving that leaves finer buckets in the file, several
files of different schemas summed, the zero bucket and +Inf, and the files kept out of
prometheus_client's way. Several real processes: tests/e2e/test_multiprocess_native.py."""

from __future__ import annotations

import math
import os
import random
import shutil
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from asgi_metrics.core.native import bucket_index
from asgi_metrics.multiprocess.directory import clean_multiproc_dir, is_alive
from asgi_metrics.multiprocess.native_files import (
    NATIVE_ARCHIVE,
    NativeFile,
    compact_native,
    read_native,
)
from tests.support.multiprocess import dead_pid

KEY = ("GET", "/a", "200")


def _counts(values: list[float], schema: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        index = bucket_index(value, schema)
        counts[index] = counts.get(index, 0) + 1
    return counts


def test_halving_in_the_file_and_reading_back(tmp_path: Path) -> None:
    file = NativeFile(str(tmp_path), schema=3, max_buckets=10, zero_threshold=2.0**-128)
    rng = random.Random(5)
    values = [math.exp(rng.uniform(-8, 3)) for _ in range(2000)]
    for value in values:
        file.observe("dur", "requests", KEY, value)
    for value in (0.0, math.inf):
        file.observe("dur", "requests", KEY, value)
    series = read_native(str(tmp_path))["dur"][KEY]
    finite = [*values, math.inf]
    assert series.schema < 3 and len(series.positive) <= 10
    assert series.positive == _counts(finite, series.schema)
    assert series.zero_count == 1 and series.count == 2002
    assert series.sum == math.inf


def test_a_forked_child_writes_its_own_file_and_schemas_sum_at_the_smallest(
    tmp_path: Path,
) -> None:
    # This process' file halves; a forked child's (its own file, opened again after the
    # fork, as a preloaded gunicorn worker's) does not; the sum is capped again.
    file = NativeFile(str(tmp_path), schema=3, max_buckets=8, zero_threshold=2.0**-128)
    wide_values = [2.0 ** (i / 4) for i in range(1, 60)]
    narrow_values = [1.0 + (i + 1) / 101 for i in range(100)]
    for value in wide_values:
        file.observe("dur", "requests", KEY, value)
    pid = os.fork()
    if pid == 0:  # the child: count, then leave without any clean-up
        try:
            for value in narrow_values:
                file.observe("dur", "requests", KEY, value)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert len(list(tmp_path.glob("asgi_metrics.native_*.bin"))) == 2
    series = read_native(str(tmp_path))["dur"][KEY]
    assert len(series.positive) <= 8
    assert series.positive == _counts(wide_values + narrow_values, series.schema)
    assert series.count == len(wide_values) + len(narrow_values)


def test_files_are_cleaned_and_ignored_by_prometheus_client(tmp_path: Path) -> None:
    file = NativeFile(str(tmp_path), schema=3, max_buckets=160, zero_threshold=2.0**-128)
    file.observe("dur", "requests", KEY, 0.25)
    assert list(tmp_path.glob("asgi_metrics.native_*.bin"))
    assert list(MultiProcessCollector(None, str(tmp_path)).collect()) == []
    clean_multiproc_dir(str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert read_native(str(tmp_path)) == {}


def _worker_file(directory: Path, pid: int, values: list[float]) -> str:
    """A native file as process ``pid`` leaves it (written here, named for ``pid``)."""
    before = set(directory.iterdir())
    file = NativeFile(str(directory), schema=3, max_buckets=160, zero_threshold=2.0**-128)
    for value in values:
        file.observe("dur", "requests", KEY, value)
    (written,) = set(directory.iterdir()) - before
    name = f"asgi_metrics.native_{pid}_{written.name.rsplit('_', 1)[1]}"
    written.rename(directory / name)
    return name


def test_dead_workers_files_are_merged_exactly_and_once(tmp_path: Path) -> None:
    rng = random.Random(11)
    batches = [[rng.expovariate(10) for _ in range(200)] for _ in range(5)]
    pids = [dead_pid() for _ in batches]
    for pid, values in zip(pids, batches, strict=True):
        _worker_file(tmp_path, pid, values)
    live = _worker_file(tmp_path, os.getpid(), [0.5, 0.5])
    everything = [v for values in batches for v in values] + [0.5, 0.5]
    before = read_native(str(tmp_path))
    compact_native(str(tmp_path), is_alive)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [NATIVE_ARCHIVE, live]
    )
    after = read_native(str(tmp_path))
    assert after["dur"][KEY].positive == before["dur"][KEY].positive == _counts(everything, 3)
    assert after["dur"][KEY].count == len(everything)
    # More dead workers later: added to the archive, again exactly; compacting twice
    # changes nothing.
    _worker_file(tmp_path, dead_pid(), [2.0, 3.0])
    compact_native(str(tmp_path), is_alive)
    compact_native(str(tmp_path), is_alive)
    assert read_native(str(tmp_path))["dur"][KEY].positive == _counts([*everything, 2.0, 3.0], 3)


def test_an_interrupted_merge_counts_nothing_twice(tmp_path: Path) -> None:
    # The archive was renamed into place, the merged files were not removed yet (the
    # process died): readers skip them, and the next merge only removes them.
    dead = _worker_file(tmp_path, dead_pid(), [0.1, 0.2, 0.3])
    kept = tmp_path / "kept.bin"
    (tmp_path / dead).rename(kept)
    _worker_file(tmp_path, dead_pid(), [0.4])
    compact_native(str(tmp_path), is_alive)  # merges the second one
    shutil.copy(kept, tmp_path / dead)  # the first comes back as if it were never merged
    compact_native(str(tmp_path), is_alive)  # now merged: counted once
    shutil.copy(kept, tmp_path / dead)  # and again, as if this merge's unlink was lost
    assert read_native(str(tmp_path))["dur"][KEY].count == 4
    compact_native(str(tmp_path), is_alive)
    assert read_native(str(tmp_path))["dur"][KEY].count == 4
    assert not (tmp_path / dead).exists()

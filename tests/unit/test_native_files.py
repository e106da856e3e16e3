"""The native files of multiprocess mode (asgi_metrics/multiprocess/native_files.py),
written and read in this process: halving that leaves finer buckets in the file, several
files of different schemas summed, the zero bucket and +Inf, and the files kept out of
prometheus_client's way. Several real processes: tests/e2e/test_multiprocess_native.py."""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

from prometheus_client.multiprocess import MultiProcessCollector

from asgi_metrics.core.native import bucket_index
from asgi_metrics.multiprocess.directory import clean_multiproc_dir
from asgi_metrics.multiprocess.native_files import NativeFile, read_native

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

"""Native histograms in multiprocess mode: per-worker files of our own beside
prometheus_client's.

prometheus_client's files hold one value per series and bucket bound, fixed when the
series is made; native buckets appear as requests arrive. So each worker writes its native
buckets into a file of its own, ``asgi_metrics.native_<pid>.bin`` in the multiprocess
directory, in prometheus_client's mmap format (:data:`~asgi_metrics.compat.MmapedDict`: a
key, a double). Each key is a JSON list:

* ``[family, table, [label values], "sum"]``: the sum of the series' values;
* ``[family, table, [label values], "zero"]``: its zero bucket;
* ``[family, table, [label values], [schema, index]]``: native bucket ``index`` of
  ``schema``;
* ``["meta", "max_buckets" | "zero_threshold"]``: the writer's settings.

Every value only grows. A series that passes ``max_buckets`` halves its resolution for what
comes next: its buckets already written stay, at their finer schema, and a reader reduces
every bucket to the smallest schema of the series (``ceil(index / 2**difference)``, the
wider bucket containing it) before summing. Nothing is rewritten, so there is no moment at
which a reader could see a bucket moved but not yet removed.

A dead worker's file is left where it is and read like a live one, so its counts stay (as
the classic histograms keep a dead worker's counts in prometheus_client's archive files).
The files do not end in ``.db``: prometheus_client's own ``MultiProcessCollector``, which
reads every ``*.db`` file as its own, never sees them. ``clean_multiproc_dir`` removes them.

A worker writes a request into the classic histogram first, then into its native file; a
scrape reads the native files first, then the classic ones
(:func:`~asgi_metrics.multiprocess.directory.collect_directory_with_native`). So while
requests are being recorded a native series may lag its classic series by the requests
recorded in between; at rest the two are equal. A native series' count is always the sum
of its own buckets, as Prometheus requires.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections.abc import Mapping
from typing import Any

from asgi_metrics.compat import MmapedDict
from asgi_metrics.core import native
from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import MetricNames
from asgi_metrics.core.native import NativeSeries

#: ``asgi_metrics.native_<pid>.bin``.
NATIVE_PREFIX = "asgi_metrics.native_"
NATIVE_SUFFIX = ".bin"


def native_file_name(pid: int) -> str:
    """The name of process ``pid``'s native file in the directory."""
    return f"{NATIVE_PREFIX}{pid}{NATIVE_SUFFIX}"


class _Series:
    """What a worker keeps of one native series: the running values of its keys (the file
    holds values, not increments) and its buckets at the current schema (for the cap)."""

    __slots__ = ("bucketing", "keys", "prefix", "sum", "values", "wide", "zero")

    def __init__(self, prefix: list[Any], schema: int) -> None:
        self.prefix = prefix
        self.bucketing = native.BUCKETINGS[schema]
        self.sum = 0.0
        self.zero = 0
        self.values: dict[tuple[int, int], int] = {}  # (schema, index) -> count
        self.keys: dict[tuple[int, int] | str, str] = {}  # -> the file's key
        # Every bucket written so far, as the bucket of the current schema containing it.
        self.wide: set[int] = set()

    def key(self, field: tuple[int, int] | str) -> str:
        text = self.keys.get(field)
        if text is None:
            text = self.keys[field] = json.dumps(
                [*self.prefix, field if isinstance(field, str) else list(field)]
            )
        return text


class NativeFile:
    """One process' native file; thread-safe (one lock per process, as prometheus_client's
    values have). Opened again, empty, in a forked child."""

    def __init__(self, directory: str, schema: int, max_buckets: int, zero_threshold: float):
        self.directory = directory
        self.schema = schema
        self.max_buckets = max_buckets
        self.zero_threshold = zero_threshold
        self._lock = threading.Lock()
        self._pid = -1
        self._file: Any = None
        self._series: dict[tuple[str, Key], _Series] = {}

    def _open(self) -> None:
        """This process' file (again after a fork: the parent's numbers are the
        parent's)."""
        self._pid = os.getpid()
        self._series = {}
        self._file = MmapedDict(os.path.join(self.directory, native_file_name(self._pid)))
        self._file.write_value(json.dumps(["meta", "max_buckets"]), float(self.max_buckets), 0.0)
        self._file.write_value(json.dumps(["meta", "zero_threshold"]), self.zero_threshold, 0.0)

    def observe(self, family: str, table: str, key: Key, value: float) -> None:
        """Count ``value`` in the native series ``key`` of ``family``."""
        with self._lock:
            if self._pid != os.getpid():
                self._open()
            series = self._series.get((family, key))
            if series is None:
                series = self._series[(family, key)] = _Series(
                    [family, table, list(key)], self.schema
                )
            write = self._file.write_value
            if self.zero_threshold < value < math.inf:
                self._add_bucket(series, series.bucketing.index(value))
            elif value > self.zero_threshold:  # +Inf
                self._add_bucket(series, native.bucket_index(value, series.bucketing.schema))
            else:  # zero, and NaN (no bucket; the counts must agree)
                series.zero += 1
                write(series.key("zero"), float(series.zero), 0.0)
            series.sum += value
            write(series.key("sum"), series.sum, 0.0)

    def _add_bucket(self, series: _Series, index: int) -> None:
        schema = series.bucketing.schema
        field = (schema, index)
        count = series.values[field] = series.values.get(field, 0) + 1
        self._file.write_value(series.key(field), float(count), 0.0)
        if index in series.wide:
            return
        series.wide.add(index)
        # Past the cap: what comes next goes into buckets of a coarser schema.
        while len(series.wide) > self.max_buckets and schema > native.SCHEMA_MIN:
            schema -= 1
            series.wide = {(wide + 1) >> 1 for wide in series.wide}
        series.bucketing = native.BUCKETINGS[schema]


# -- reading ------------------------------------------------------------------------------


def _read(path: str) -> list[tuple[str, float]]:
    try:
        return [(k, v) for k, v, _, _ in MmapedDict.read_all_values_from_file(path)]
    except struct.error:  # created, not yet sized
        return []


class _Sum:
    __slots__ = ("buckets", "sum", "table", "zero")

    def __init__(self, table: str) -> None:
        self.table = table
        self.sum = 0.0
        self.zero = 0
        self.buckets: dict[tuple[int, int], int] = {}


def read_native(directory: str) -> dict[str, dict[Key, NativeSeries]]:
    """Every native series in ``directory``, summed over all workers, living and dead,
    by family name: ``{family: {label values: NativeSeries}}``. Each series is at the
    smallest schema any worker wrote it in, capped at the smallest ``max_buckets`` of the
    writers."""
    sums: dict[tuple[str, Key], _Sum] = {}
    max_buckets: int | None = None
    zero_threshold = 0.0
    cache: dict[str, Any] = {}
    try:
        entries = [e for e in os.scandir(directory)
                   if e.name.startswith(NATIVE_PREFIX) and e.name.endswith(NATIVE_SUFFIX)]
    except FileNotFoundError:
        return {}
    for entry in entries:
        try:
            rows = _read(entry.path)
        except FileNotFoundError:  # removed by a clean-up meanwhile
            continue
        for text, value in rows:
            parsed = cache.get(text)
            if parsed is None:
                parsed = cache[text] = json.loads(text)
            if parsed[0] == "meta":
                if parsed[1] == "max_buckets":
                    mine = int(value)
                    max_buckets = mine if max_buckets is None else min(max_buckets, mine)
                elif parsed[1] == "zero_threshold":
                    zero_threshold = max(zero_threshold, value)
                continue
            family, table, labels, field = parsed
            ident = (family, tuple(labels))
            acc = sums.get(ident)
            if acc is None:
                acc = sums[ident] = _Sum(table)
            if field == "sum":
                acc.sum += value
            elif field == "zero":
                acc.zero += int(value)
            else:
                bucket = (field[0], field[1])
                acc.buckets[bucket] = acc.buckets.get(bucket, 0) + int(value)
    result: dict[str, dict[Key, NativeSeries]] = {}
    for (family, key), acc in sums.items():
        result.setdefault(family, {})[key] = _series(
            acc, zero_threshold, 160 if max_buckets is None else max_buckets
        )
    return result


def _series(acc: _Sum, zero_threshold: float, max_buckets: int) -> NativeSeries:
    schemas = [schema for (schema, _), count in acc.buckets.items() if count]
    schema = min(schemas) if schemas else native.SCHEMA_MAX
    positive: dict[int, int] = {}
    for (finer, index), count in acc.buckets.items():
        if count:
            wide = (index + (1 << (finer - schema)) - 1) >> (finer - schema)
            positive[wide] = positive.get(wide, 0) + count
    schema, positive = native.capped(schema, positive, max_buckets)
    return NativeSeries(
        schema=schema,
        zero_threshold=zero_threshold,
        zero_count=acc.zero,
        count=acc.zero + sum(positive.values()),
        sum=acc.sum,
        positive=positive,
    )


def native_tables(
    by_family: Mapping[str, dict[Key, NativeSeries]], names: MetricNames
) -> dict[str, dict[Key, NativeSeries]]:
    """:func:`read_native`'s answer for one store's families, by table (``requests``,
    ``ttfb``, ``request_size``, ``response_size``): the shape of
    :attr:`~asgi_metrics.core.store.Snapshot.native`."""
    tables: dict[str, dict[Key, NativeSeries]] = {}
    for table, family in (
        ("requests", names.duration),
        ("ttfb", names.time_to_first_byte),
        ("request_size", names.request_size),
        ("response_size", names.response_size),
    ):
        if family is not None and family.name in by_family:
            tables[table] = by_family[family.name]
    return tables

"""Native histograms in multiprocess mode: per-worker files of our own beside
prometheus_client's.

prometheus_client's files hold one value per series and bucket bound, fixed when the
series is made; native buckets appear as requests arrive. So each worker writes its native
buckets into a file of its own, ``asgi_metrics.native_<pid>_<ns>.bin`` in the multiprocess
directory (:func:`native_file_name`), in prometheus_client's mmap format
(:data:`~asgi_metrics.compat.MmapedDict`: a key, a double). Each key is a JSON list:

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

A dead worker's counts stay: at scrape time its file is summed into the archive file
(:func:`compact_native`), as the classic histograms keep a dead worker's counts in the
archive of prometheus_client's files.
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

import contextlib
import json
import math
import os
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asgi_metrics.compat import MmapedDict, flush_mmaped
from asgi_metrics.core import native
from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import MetricNames
from asgi_metrics.core.native import NativeSeries

#: ``asgi_metrics.native_<pid>_<ns>.bin``.
NATIVE_PREFIX = "asgi_metrics.native_"
NATIVE_SUFFIX = ".bin"
#: Dead workers' native files are merged into this one.
NATIVE_ARCHIVE = f"{NATIVE_PREFIX}archive{NATIVE_SUFFIX}"
_ABSORBED = "absorbed"
_LABELS = "labels"


def native_file_name(pid: int) -> str:
    """A new name for process ``pid``'s native file: the PID and the time it was opened,
    so that a PID used again (by a later worker) never writes into a dead one's file, and
    a file merged into the archive is never confused with a later one."""
    return f"{NATIVE_PREFIX}{pid}_{time.time_ns()}{NATIVE_SUFFIX}"


def native_file_pid(name: str) -> int | None:
    """The PID in a worker's native file name; ``None`` for the archive and other files."""
    if not (name.startswith(NATIVE_PREFIX) and name.endswith(NATIVE_SUFFIX)):
        return None
    pid, _, _ = name[len(NATIVE_PREFIX):-len(NATIVE_SUFFIX)].partition("_")
    return int(pid) if pid.isdigit() else None


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

    def __init__(self, directory: str, schema: int, max_buckets: int, zero_threshold: float,
                 const_labels: Mapping[str, str] | None = None):
        self.directory = directory
        self.schema = schema
        self.max_buckets = max_buckets
        self.zero_threshold = zero_threshold
        self.const_labels = dict(const_labels or {})
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

    def observe(self, family: str, table: str, key: Key, value: float,
                label_names: Sequence[str] = ()) -> None:
        """Count ``value`` in the native series ``key`` of ``family``, whose labels are
        ``label_names`` (written once per family, for :func:`native_lookup`)."""
        with self._lock:
            if self._pid != os.getpid():
                self._open()
            series = self._series.get((family, key))
            if series is None:
                if not any(f == family for f, _ in self._series):
                    self._file.write_value(json.dumps(
                        [_LABELS, family, list(label_names), self.const_labels]
                    ), 1.0, 0.0)
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
    rows_by_file = _native_rows(directory)
    for rows in rows_by_file.values():
        for text, value in rows:
            parsed = cache.get(text)
            if parsed is None:
                parsed = cache[text] = json.loads(text)
            if parsed[0] in (_ABSORBED, _LABELS):
                continue
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


def _native_rows(directory: str) -> dict[str, list[tuple[str, float]]]:
    """The rows of every native file to count, by name: the archive's and those of the
    workers' files not merged into it yet."""
    try:
        names = [e.name for e in os.scandir(directory)
                 if e.name.startswith(NATIVE_PREFIX) and e.name.endswith(NATIVE_SUFFIX)]
    except FileNotFoundError:
        return {}
    found: dict[str, list[tuple[str, float]]] = {}
    absorbed: set[str] = set()
    if NATIVE_ARCHIVE in names:
        try:
            found[NATIVE_ARCHIVE] = rows = _read(os.path.join(directory, NATIVE_ARCHIVE))
        except FileNotFoundError:
            rows = []
        absorbed = {json.loads(text)[1] for text, _ in rows if text.startswith('["absorbed"')}
    for name in names:
        if name == NATIVE_ARCHIVE or name in absorbed:
            continue  # a merged file not yet removed (the merge was interrupted)
        try:
            found[name] = _read(os.path.join(directory, name))
        except FileNotFoundError:  # removed by a clean-up meanwhile
            continue
    return found


def compact_native(directory: str, is_alive: Callable[[int], bool]) -> None:
    """Merge the native files of dead processes into the archive (call with the
    directory lock held), so a scrape reads one native file per live worker plus one.

    The new archive names the files it took in (``["absorbed", name]``) and replaces the
    old one in one rename; the files are removed after. If the process dies between the
    two, readers skip the files the archive names, and the next compaction removes them:
    nothing is counted twice or lost. Each file name is used once (PID and time), so an
    absorbed name never comes back as a live worker's.
    """
    try:
        names = [e.name for e in os.scandir(directory)]
    except FileNotFoundError:
        return
    dead = []
    for name in names:
        pid = native_file_pid(name)
        if pid is not None and not is_alive(pid):
            dead.append(name)
    if not dead:
        return
    rows = _native_rows(directory)
    archive_rows = rows.get(NATIVE_ARCHIVE, [])
    already = {json.loads(text)[1] for text, _ in archive_rows if text.startswith('["absorbed"')}
    fresh = [name for name in dead if name not in already and name in rows]
    if fresh:
        totals: dict[str, float] = {}
        meta: dict[str, float] = {}
        for name in [NATIVE_ARCHIVE, *fresh]:
            for text, value in rows.get(name, []):
                if text.startswith('["labels"'):
                    meta[text] = 1.0
                elif text.startswith('["meta"'):
                    # Settings, not counts: the tightest cap, the widest zero bucket.
                    keep = min if "max_buckets" in text else max
                    meta[text] = keep(meta.get(text, value), value)
                elif not text.startswith('["absorbed"'):
                    totals[text] = totals.get(text, 0.0) + value
        tmp = os.path.join(directory, f"{NATIVE_ARCHIVE}.{os.getpid()}.tmp")
        out = MmapedDict(tmp)
        try:
            for text, value in (*meta.items(), *totals.items()):
                out.write_value(text, value, 0.0)
            # Only the files not yet removed need naming; older names are dropped.
            for name in sorted(set(fresh) | (already & set(names))):
                out.write_value(json.dumps([_ABSORBED, name]), 1.0, 0.0)
            flush_mmaped(out)
        finally:
            out.close()
        os.replace(tmp, os.path.join(directory, NATIVE_ARCHIVE))
    for name in dead:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))


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


#: (family name, a series' labels as sorted (name, value) pairs, constant labels included)
#: -> its native series: what the protobuf encoder asks for each classic histogram series
#: it reads from the directory (``asgi_metrics.exposition.protobuf.NativeLookup``).
Lookup = Callable[[str, tuple[tuple[str, str], ...]], "NativeSeries | None"]


def native_lookup(
    by_family: Mapping[str, dict[Key, NativeSeries]], directory: str
) -> Lookup:
    """A lookup of :func:`read_native`'s series by the labels their classic series have in
    prometheus_client's files (the family's label names, which each writer recorded in its
    native file, and its constant labels)."""
    labels: dict[str, tuple[list[str], dict[str, str]]] = {}
    for rows in _native_rows(directory).values():
        for text, _ in rows:
            if text.startswith('["labels"'):
                _, family, names, const = json.loads(text)
                labels[family] = (names, const)
    index: dict[tuple[str, tuple[tuple[str, str], ...]], NativeSeries] = {}
    for family, series in by_family.items():
        found = labels.get(family)
        if found is None:
            continue
        names, const = found
        for key, native_series in series.items():
            pairs = tuple(sorted([*zip(names, key, strict=False), *const.items()]))
            index[(family, pairs)] = native_series

    def lookup(family: str, pairs: tuple[tuple[str, str], ...]) -> NativeSeries | None:
        return index.get((family, pairs))

    return lookup

"""Exemplars in multiprocess mode: each worker's latest exemplar per series and bucket, in a
file of its own beside prometheus_client's.

prometheus_client's files hold one double per value and nowhere to put a trace ID. So each
worker writes its exemplars of the duration histogram into ``asgi_metrics.exemplars_<pid>.bin``
in the multiprocess directory, and a scrape of any worker reads every worker's file and
shows, per series and bucket, the exemplar with the latest timestamp
(:func:`collect_exemplars`, :func:`attach_exemplars`).

The format, all little-endian, laid out like prometheus_client's mmap files (a header, then
entries appended, the header's ``used`` written after the entry it covers):

* header, 8 bytes: ``uint32 used`` (bytes in use, header included), ``uint32 version``;
* one entry per series, the first time the worker has an exemplar for it:
  ``uint32 key length``, ``uint32 slot count``, the key (UTF-8 JSON
  ``[family, [label names], [label values], [le, ...]]``) padded to 8 bytes, then one
  fixed-size slot per bucket;
* a slot, 48 bytes: ``uint64 trace_id high, uint64 trace_id low, uint64 span_id,
  double value, double timestamp, uint32 crc32 of those 40 bytes, 4 bytes zero``. All zero:
  no exemplar yet.

So a file is bounded: one slot per series and bucket, overwritten in place by the next
exemplar of that bucket, and the series are those the store admits (its label-set cap).

The request path takes no lock: a slot is one slice assignment into the mmap (a single
copy while holding the GIL, so two threads of one worker never interleave in a slot), and
only the worker itself writes its file. A reader in another process can still catch a slot
half-written: the checksum tells it so, and it reads the file again (a slot that stays torn
is skipped for that scrape; the next exemplar rewrites it). Only a series' first exemplar
takes a lock (the store's slow path already takes one for a new series), to append its entry.

A dead worker's file is merged, under the directory lock, into
``asgi_metrics.exemplars_archive.bin`` (same format, latest timestamp per slot wins) and
removed, so its exemplars stay visible until a newer one replaces them, and a scrape reads
one file per live worker plus the archive, however many workers have come and gone. Merging
is idempotent (the latest wins again), so a compaction interrupted half-way needs no journal:
the next one redoes it. The files do not end in ``.db``: prometheus_client's own
``MultiProcessCollector`` never reads them. ``clean_multiproc_dir`` removes them.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import struct
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from time import time
from typing import Any
from zlib import crc32

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar as ClientExemplar

from asgi_metrics.core.labels import Key
from asgi_metrics.core.store import Exemplar
from asgi_metrics.otel.spans import format_span_id, format_trace_id

#: ``asgi_metrics.exemplars_<pid>.bin`` (``archive`` in place of the PID: dead workers').
EXEMPLAR_PREFIX = "asgi_metrics.exemplars_"
EXEMPLAR_SUFFIX = ".bin"
ARCHIVE_NAME = f"{EXEMPLAR_PREFIX}archive{EXEMPLAR_SUFFIX}"
#: The value of the exemplar on a request counter: the increment the request made.
COUNTER_EXEMPLAR_VALUE = 1.0

_VERSION = 1
_HEADER = struct.Struct("<II")
_ENTRY = struct.Struct("<II")
_DATA = struct.Struct("<QQQdd")
_CRC = struct.Struct("<I4x")
_SLOT = struct.Struct("<QQQddI4x")
SLOT_SIZE = _SLOT.size  # 48
_LOW = (1 << 64) - 1
_INITIAL_SIZE = 1 << 16
#: How many times a reader reads a live file again when it caught a slot being written.
_REREADS = 3

#: Everything read from a directory: by the entry's JSON key, one exemplar (or ``None``)
#: per bucket.
Exemplars = dict[str, list["Exemplar | None"]]


def exemplar_file_name(pid: int) -> str:
    """The name of process ``pid``'s exemplar file in the directory."""
    return f"{EXEMPLAR_PREFIX}{pid}{EXEMPLAR_SUFFIX}"


def _pad(length: int) -> int:
    return (length + 7) & ~7


def _encode(exemplar: Exemplar) -> bytes:
    trace_id, span_id, value, timestamp = exemplar
    data = _DATA.pack(trace_id >> 64, trace_id & _LOW, span_id, value, timestamp)
    return data + _CRC.pack(crc32(data))


class ExemplarFile:
    """This process' exemplar file for one histogram family; safe to share between threads
    (see the module docs), opened again, empty, in a forked child."""

    def __init__(
        self,
        directory: str,
        family: str,
        label_names: Sequence[str],
        const_values: Sequence[str],
        les: Sequence[str],
    ) -> None:
        self.directory = directory
        self._prefix = (family, list(label_names))
        self._const_values = list(const_values)
        self._les = list(les)
        self._lock = threading.Lock()
        self._fd = -1
        self._mm: Any = None
        self._used = 0
        # Store key -> offset of its first slot; read without the lock (a dict lookup).
        self._offsets: dict[Key, int] = {}
        self._by_text: dict[str, int] = {}
        # A forked child must not write into its parent's file (prometheus_client's values
        # check the PID on every write; a fork hook costs nothing per request).
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget(ref))

    def record(self, key: Key, index: int, trace_id: int, span_id: int, value: float) -> None:
        """Keep (trace_id, span_id, value, now) as the latest exemplar of bucket ``index``
        of series ``key`` (the label values after the family's own, const labels left out)."""
        base = self._offsets.get(key)
        if base is None:
            base = self._add(key)
        data = _DATA.pack(trace_id >> 64, trace_id & _LOW, span_id, value, time())
        start = base + index * SLOT_SIZE
        self._mm[start:start + SLOT_SIZE] = data + _CRC.pack(crc32(data))

    def close(self) -> None:
        """Unmap and close the file (tests; a worker keeps it until it exits)."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        self._mm = None
        self._used = 0
        self._offsets = {}
        self._by_text = {}

    def _open(self) -> None:
        path = os.path.join(self.directory, exemplar_file_name(os.getpid()))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        size = os.fstat(fd).st_size
        if size < _INITIAL_SIZE:
            os.ftruncate(fd, _INITIAL_SIZE)
            size = _INITIAL_SIZE
        self._fd = fd
        self._mm = mmap.mmap(fd, size)
        used, _ = _HEADER.unpack_from(self._mm, 0)
        if used < _HEADER.size:
            # New (or a dead process' whose PID we got, killed before its first entry).
            used = _HEADER.size
            _HEADER.pack_into(self._mm, 0, used, _VERSION)
        else:
            # A dead process with our PID left its file, not compacted yet: carry on with
            # its entries (its exemplars stay, ours overwrite them), as prometheus_client
            # does with its values.
            for text, offset, _ in _entries(bytes(self._mm[:used])):
                self._by_text[text] = offset
        self._used = used

    def _add(self, key: Key) -> int:
        with self._lock:
            if self._mm is None:
                self._open()
            base = self._offsets.get(key)
            if base is not None:
                return base
            family, names = self._prefix
            text = json.dumps([family, names, [*key, *self._const_values], self._les])
            base = self._by_text.get(text)
            if base is None:
                base = self._append(text)
            self._offsets[key] = base
            return base

    def _append(self, text: str) -> int:
        raw = text.encode("utf-8")
        start = self._used
        base = start + _ENTRY.size + _pad(len(raw))
        end = base + len(self._les) * SLOT_SIZE
        if end > len(self._mm):
            size = len(self._mm)
            while size < end:
                size *= 2
            os.ftruncate(self._fd, size)
            # The old mapping is not closed: a thread may be about to write a slot through
            # it (both map the same file, so that write lands). Dropped, it unmaps itself.
            self._mm = mmap.mmap(self._fd, size)
        mm = self._mm
        _ENTRY.pack_into(mm, start, len(raw), len(self._les))
        mm[start + _ENTRY.size:start + _ENTRY.size + len(raw)] = raw
        # Slots are zero already (a new file, or ftruncate's zeros); the entry is complete
        # before ``used`` covers it.
        _HEADER.pack_into(mm, 0, end, _VERSION)
        self._used = end
        self._by_text[text] = base
        return base


def _forget(ref: weakref.ref[ExemplarFile]) -> None:
    exemplar_file = ref()
    if exemplar_file is not None:
        # The parent's mapping and descriptor are the parent's: let go without closing
        # anything shared, and open this process' own file on the first exemplar.
        with contextlib.suppress(OSError):
            if exemplar_file._fd >= 0:
                os.close(exemplar_file._fd)
        exemplar_file._fd = -1
        exemplar_file._mm = None
        exemplar_file._used = 0
        exemplar_file._offsets = {}
        exemplar_file._by_text = {}
        exemplar_file._lock = threading.Lock()


# -- reading ---------------------------------------------------------------------------


def _entries(data: bytes) -> Iterable[tuple[str, int, int]]:
    """(key, offset of the first slot, slot count) of each complete entry in ``data``."""
    if len(data) < _HEADER.size:
        return
    used = min(_HEADER.unpack_from(data, 0)[0], len(data))
    position = _HEADER.size
    while position + _ENTRY.size <= used:
        length, count = _ENTRY.unpack_from(data, position)
        base = position + _ENTRY.size + _pad(length)
        end = base + count * SLOT_SIZE
        if length == 0 or end > used:
            return  # not ours, or cut short: nothing after it can be trusted
        key = data[position + _ENTRY.size:position + _ENTRY.size + length]
        yield key.decode("utf-8", "replace"), base, count
        position = end


def read_file(path: str, into: Exemplars | None = None) -> tuple[Exemplars, bool]:
    """The exemplars of one file merged into ``into`` (a new dict if ``None``; per slot the
    latest wins), and whether some slot was torn (caught being written: left out)."""
    with open(path, "rb") as file:
        data = file.read()
    found: Exemplars = {} if into is None else into
    torn = False
    unpack = _SLOT.unpack_from
    for text, base, count in _entries(data):
        kept = found.get(text)
        if kept is None:
            kept = found[text] = [None] * count
        for index in range(min(count, len(kept))):
            offset = base + index * SLOT_SIZE
            high, low, span_id, value, timestamp, check = unpack(data, offset)
            if not check and not timestamp:
                continue  # never written
            old = kept[index]
            if old is not None and old[3] >= timestamp:
                continue
            if check != crc32(data[offset:offset + _DATA.size]):
                torn = True
                continue
            kept[index] = ((high << 64) | low, span_id, value, timestamp)
    return found, torn


def _read_live(path: str, total: Exemplars) -> None:
    # A torn slot is read again with the whole file; merging a slot twice changes nothing.
    for _ in range(_REREADS):
        if not read_file(path, total)[1]:
            return


def write_file(path: str, exemplars: Exemplars) -> None:
    """Write ``exemplars`` to ``path`` in the file format (the archive), whole, by renaming
    a temporary file into place."""
    out = bytearray(_HEADER.size)
    for text, slots in exemplars.items():
        raw = text.encode("utf-8")
        out += _ENTRY.pack(len(raw), len(slots))
        out += raw + bytes(_pad(len(raw)) - len(raw))
        for exemplar in slots:
            out += bytes(SLOT_SIZE) if exemplar is None else _encode(exemplar)
    _HEADER.pack_into(out, 0, len(out), _VERSION)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as file:
        file.write(out)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def _pid_of(name: str) -> str | None:
    if name.startswith(EXEMPLAR_PREFIX) and name.endswith(EXEMPLAR_SUFFIX):
        return name[len(EXEMPLAR_PREFIX):-len(EXEMPLAR_SUFFIX)]
    return None


def collect_exemplars(path: str, is_alive: Callable[[int], bool]) -> Exemplars:
    """Every exemplar in the directory, latest per series and bucket; dead workers' files
    merged into the archive first. Call with the directory lock held."""
    archive = os.path.join(path, ARCHIVE_NAME)
    live: list[str] = []
    dead: list[str] = []
    for entry in os.scandir(path):
        pid = _pid_of(entry.name)
        if pid is None or pid == "archive":
            continue
        (live if not pid.isdigit() or is_alive(int(pid)) else dead).append(entry.path)
    total: Exemplars = {}
    with contextlib.suppress(FileNotFoundError):
        read_file(archive, total)
    if dead:
        for name in dead:
            with contextlib.suppress(FileNotFoundError):
                read_file(name, total)  # nobody writes it any more: what is torn stays so
        write_file(archive, total)
        for name in dead:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
    for name in live:
        with contextlib.suppress(FileNotFoundError):
            _read_live(name, total)
    return total


def _client_exemplar(exemplar: Exemplar, value: float | None = None) -> ClientExemplar:
    trace_id, span_id, observed, timestamp = exemplar
    return ClientExemplar(
        {"trace_id": format_trace_id(trace_id), "span_id": format_span_id(span_id)},
        observed if value is None else value,
        timestamp,
    )


def attach_exemplars(
    metrics: Iterable[Metric], exemplars: Exemplars, counters: Iterable[tuple[str, str, str]]
) -> None:
    """Put ``exemplars`` on the bucket samples of their histograms in ``metrics`` and, for
    each derived counter in ``counters`` (counter name, help, histogram name), the latest
    exemplar of a series on that series' counter sample (with the counter's increment, 1,
    as its value, as the single-process exposition shows it)."""
    if not exemplars:
        return
    by_series: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Exemplar]] = {}
    latest: dict[tuple[str, tuple[tuple[str, str], ...]], Exemplar] = {}
    for text, slots in exemplars.items():
        try:
            family, names, values, les = json.loads(text)
            labels = tuple(sorted(zip(names, values, strict=True)))
        except (ValueError, TypeError):
            continue
        buckets = {le: exemplar for le, exemplar in zip(les, slots, strict=False)
                   if exemplar is not None}
        if buckets:
            by_series[(family, labels)] = buckets
            latest[(family, labels)] = max(buckets.values(), key=lambda item: item[3])
    histogram_of = {counter: histogram for counter, _, histogram in counters}
    for metric in metrics:
        if metric.type == "histogram":
            bucket_name = f"{metric.name}_bucket"
            for position, sample in enumerate(metric.samples):
                if sample.name != bucket_name or sample.exemplar is not None:
                    continue
                le = sample.labels.get("le")
                rest = tuple(sorted(item for item in sample.labels.items() if item[0] != "le"))
                found = by_series.get((metric.name, rest), {}).get(le or "")
                if found is not None:
                    metric.samples[position] = sample._replace(exemplar=_client_exemplar(found))
        elif metric.type == "counter" and metric.name in histogram_of:
            histogram = histogram_of[metric.name]
            for position, sample in enumerate(metric.samples):
                found = latest.get((histogram, tuple(sorted(sample.labels.items()))))
                if found is not None and sample.exemplar is None:
                    metric.samples[position] = sample._replace(
                        exemplar=_client_exemplar(found, COUNTER_EXEMPLAR_VALUE)
                    )

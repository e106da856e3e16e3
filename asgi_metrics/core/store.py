"""Where finished requests are counted in a single process: a store whose per-request path
takes no lock.

Each OS thread writes only to its own shard (a few plain dicts), so concurrent writers
never race and nothing on the request path waits for a lock. A scrape sums the shards.

Writers that share an OS thread share its shard: asyncio tasks, and gevent greenlets too
(the shard lives in the OS thread's storage even where gevent has monkey-patched
``threading.local`` into a greenlet-local). They take turns only at their own switch
points, and recording has none between finding a series and adding to it.

A shard is retired when its thread ends, however the thread was started (``threading``,
``_thread.start_new_thread``, a thread made outside Python, a greenlet where the
thread-local is a greenlet-local): next to the shard, the thread-local holds an
:class:`_Owner`, dropped with the rest of that thread's storage once nothing runs in the
thread any more, which hands the shard over. The next scrape, or the next new shard, folds
the shards handed over into one retired shard, so servers that start a thread (or a
greenlet) per connection do not grow the store, scraped or not.

A histogram series is one list ``[sum, n_0, ..., n_k]``: the sum and the per-bucket counts
(not cumulative; the last one is ``+Inf``). The request count is the sum of the bucket
counts, so ``_count``, the ``+Inf`` bucket and ``http_requests_total`` always agree.

With native histograms on, :class:`NativeRequestStore` keeps each series' native buckets
in the same shard, as the last element of its classic series; a scrape reads both forms of
one moment (:func:`_copy_native`) and sums the shards at their smallest schema.

Cardinality is capped per family by :class:`~asgi_metrics.core.label_cap.LabelSetCap`: a key
a shard has not seen yet takes the slow path and asks the cap, under its lock. Keys
already present never reach the lock.
"""

from __future__ import annotations

import sys
import threading
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from math import frexp
from time import sleep, time
from typing import Any

from asgi_metrics.core import native
from asgi_metrics.core.label_cap import LabelSetCap
from asgi_metrics.core.labels import Key
from asgi_metrics.core.native import NativeSeries

Series = list[float]
#: The native form of one histogram series in one shard, kept as the last element of its
#: classic series (so one lookup finds both): ``[buckets, bounds, mult, add, shift]``, the
#: last four its schema's :class:`~asgi_metrics.core.native.Bucketing` constants.
#: ``buckets`` maps bucket index -> count, and holds the schema under :data:`SCHEMA_KEY`
#: and the zero bucket under :data:`ZERO_KEY` (outside the range of bucket indices), so
#: that one ``dict.copy()`` reads all three together.
NativeState = list[Any]
SCHEMA_KEY = 1 << 40
ZERO_KEY = SCHEMA_KEY + 1
_INF = float("inf")
#: (trace_id, span_id, observed value, unix timestamp); the IDs as integers.
Exemplar = tuple[int, int, float, float]
#: One slot per duration bucket (the last one ``+Inf``); ``None`` until one is seen.
ExemplarSlots = list["Exemplar | None"]


class _Shard:
    __slots__ = ("exceptions", "exemplars", "in_flight", "request_size", "requests",
                 "response_size", "retired_native", "ttfb")

    def __init__(self) -> None:
        self.requests: dict[Key, Series] = {}
        self.in_flight: dict[str, int] = {}
        self.exceptions: dict[Key, int] = {}
        self.ttfb: dict[Key, Series] = {}
        self.request_size: dict[Key, Series] = {}
        self.response_size: dict[Key, Series] = {}
        self.exemplars: dict[Key, ExemplarSlots] = {}
        # Only in the retired shard: the native series folded in from ended threads.
        self.retired_native: dict[str, dict[Key, NativeSeries]] = {
            name: {} for name in _HISTOGRAMS
        }


class _Owner:
    """Kept in a thread's thread-local storage beside its shard; when that storage is
    dropped (the thread has ended), hands the shard over to be retired."""

    __slots__ = ("ended", "shard")

    def __init__(self, shard: _Shard, ended: deque[_Shard]) -> None:
        self.shard = shard
        self.ended = ended

    def __del__(self) -> None:
        # Runs wherever the storage is dropped: in the ending thread's teardown, in a
        # garbage collection in any thread, maybe in the middle of a scrape that holds the
        # store's lock. So: no lock, only deque.append, which is atomic.
        self.ended.append(self.shard)


def _os_thread_local() -> Any:
    """A ``threading.local`` whose storage is per OS thread.

    Under gevent's monkey-patching ``threading.local`` is a greenlet-local: one shard per
    greenlet would still be retired (gevent drops a greenlet's storage when it dies), but
    would cost a shard, and a fold, per connection, and gevent's local is slower to read.
    Its greenlets share an OS thread and never interleave inside a recording, so they can
    share that thread's shard: take the unpatched thread-local.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        try:
            return monkey.get_original("_thread", "_local")()
        except Exception:  # an unexpected gevent: its local is correct too, only slower
            pass
    return threading.local()


@dataclass
class Snapshot:
    """The summed values of every shard at one moment."""

    requests: dict[Key, Series] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    exceptions: dict[Key, int] = field(default_factory=dict)
    ttfb: dict[Key, Series] = field(default_factory=dict)
    request_size: dict[Key, Series] = field(default_factory=dict)
    response_size: dict[Key, Series] = field(default_factory=dict)
    exemplars: dict[Key, ExemplarSlots] = field(default_factory=dict)
    #: Native histogram series by table ("requests", "ttfb", "request_size",
    #: "response_size"); empty while native histograms are off.
    native: dict[str, dict[Key, NativeSeries]] = field(default_factory=dict)


_HISTOGRAMS = ("requests", "ttfb", "request_size", "response_size")
#: How often a scrape reads a native series again when a request was being recorded into
#: it at that moment, before it gives up on an identical count (see _copy_native).
_CONSISTENT_READS = 100


class RequestStore:
    """Counts requests, durations, in-flight requests and exceptions.

    ``buckets`` and ``size_buckets`` are the finite bucket bounds (``+Inf`` is implied).
    """

    def __init__(
        self,
        buckets: tuple[float, ...],
        size_buckets: tuple[float, ...],
        max_label_sets: int = 2000,
        on_overflow: Callable[[str], None] | None = None,
    ) -> None:
        self.buckets = buckets
        self.size_buckets = size_buckets
        self._width = len(buckets) + 2
        self._size_width = len(size_buckets) + 2
        self._local = _os_thread_local()
        # Guards the shard list and the retired shard; the request path never waits for it.
        self._lock = threading.Lock()
        self._shards: list[_Shard] = []
        self._retired = _Shard()
        # Handed over without the lock (deque.append and popleft are atomic), taken in
        # under it by _settle(): new shards, and shards whose thread has ended.
        self._born: deque[_Shard] = deque()
        self._ended: deque[_Shard] = deque()
        self.max_label_sets = max_label_sets
        self._cap = LabelSetCap(max_label_sets, on_overflow)
        self._admit = self._cap.admit
        #: How shards' native series are summed; ``None`` keeps no native form.
        self._native: _NativeConfig | None = None

    def label_set_count(self, table: str) -> int:
        """How many distinct keys ``table`` holds across all shards (tests, diagnostics)."""
        return self._cap.count(table)

    def shard_count(self) -> int:
        """How many per-thread shards the store holds now (diagnostics, tests).

        One for each thread that has recorded and has not ended: an OS thread, shared by
        the asyncio tasks and gevent greenlets that run on it (a greenlet of its own where
        ``threading.local`` is another library's greenlet-local, e.g. eventlet's). Shards
        of ended threads are folded first, so this does not count them.
        """
        with self._lock:
            self._settle()
            return len(self._shards)

    def _shard(self) -> _Shard:
        try:
            return self._local.shard  # type: ignore[no-any-return]
        except AttributeError:
            pass
        shard = _Shard()
        # Born before its owner can hand it over as ended: _settle() relies on the order.
        self._born.append(shard)
        self._local.owner = _Owner(shard, self._ended)
        self._local.shard = shard
        # Fold what ended threads left, so a store that is never scraped stays small too.
        # Without waiting: a scrape in progress does it anyway, and this thread may be the
        # one holding the lock (a garbage collection during a scrape recording a request).
        if self._ended and self._lock.acquire(blocking=False):
            try:
                self._settle()
            finally:
                self._lock.release()
        return shard

    def start(self, method: str) -> None:
        """One more request of ``method`` in flight."""
        try:
            in_flight = self._local.shard.in_flight
        except AttributeError:
            in_flight = self._shard().in_flight
        try:
            in_flight[method] += 1
        except KeyError:
            in_flight[method] = 1

    def end(self, method: str) -> None:
        """One request of ``method`` fewer in flight, not recorded (``do_not_track``)."""
        try:
            in_flight = self._local.shard.in_flight
        except AttributeError:
            in_flight = self._shard().in_flight
        # Started in another thread, maybe: the shards still sum right.
        in_flight[method] = in_flight.get(method, 0) - 1

    def observe(
        self,
        key: Key,
        duration: float,
        ended: str | None = None,
        exemplar: tuple[int, int] | None = None,
    ) -> Series:
        """Count one finished request under ``key`` = (method, route, status); returns
        the series it was counted in.

        ``ended`` is the method to take out of the in-flight count at the same time (one
        shard lookup for both, on the hot path), or ``None``. ``exemplar`` is the
        (trace_id, span_id) of the sampled span it was served in, kept as the latest
        exemplar of its bucket (the same shard lookup and bucket search), or ``None``.
        """
        try:
            shard = self._local.shard
        except AttributeError:
            shard = self._shard()
        if ended is not None:
            in_flight = shard.in_flight
            try:
                in_flight[ended] -= 1
            except KeyError:  # started in another thread: the shards still sum right
                in_flight[ended] = -1
        requests: dict[Key, Series] = shard.requests
        series = requests.get(key)
        if series is None:  # the slow path: new to this shard, maybe new to the store
            key, series = self._new_series(requests, "requests", key, self._width)
        index = bisect_left(self.buckets, duration)
        series[0] += duration
        series[index + 1] += 1
        if exemplar is not None:
            # ``key`` is the series counted above (the overflow one past the cap).
            exemplars = shard.exemplars
            slots = exemplars.get(key)
            if slots is None:
                slots = exemplars[key] = [None] * (self._width - 1)
            slots[index] = (exemplar[0], exemplar[1], duration, time())
        return series

    def _new_series(
        self, table: dict[Key, Series], name: str, key: Key, width: int
    ) -> tuple[Key, Series]:
        """The slow path: ``key`` is new to this shard's ``table``; the key it is counted
        under (the overflow one past the cap) and its series."""
        key = self._admit(name, key)
        series = table.get(key)
        if series is None:
            series = table[key] = [0.0] * width
        return key, series

    def observe_extra(
        self,
        key: Key,
        ttfb: float | None,
        request_size: int | None,
        response_size: int | None,
    ) -> None:
        """Record the optional histograms (each ``None`` when that one is off)."""
        shard = self._shard()
        if ttfb is not None:
            self._add(shard, "ttfb", shard.ttfb, key, ttfb, self.buckets, self._width)
        if request_size is not None:
            self._add(shard, "request_size", shard.request_size, key, request_size,
                      self.size_buckets, self._size_width)
        if response_size is not None:
            self._add(shard, "response_size", shard.response_size, key, response_size,
                      self.size_buckets, self._size_width)

    def _add(
        self,
        shard: _Shard,
        name: str,
        table: dict[Key, Series],
        key: Key,
        value: float,
        bounds: tuple[float, ...],
        width: int,
    ) -> Series:
        series = table.get(key)
        if series is None:
            key, series = self._new_series(table, name, key, width)
        series[0] += value
        series[bisect_left(bounds, value) + 1] += 1
        return series

    def count_exception(self, key: Key) -> None:
        """Count one exception under ``key`` = (method, route, exception type)."""
        exceptions = self._shard().exceptions
        try:
            exceptions[key] += 1
        except KeyError:
            key = self._admit("exceptions", key)
            exceptions[key] = exceptions.get(key, 0) + 1

    def snapshot(self) -> Snapshot:
        """Sum every shard. Safe while other threads keep recording."""
        total = Snapshot()
        # Scrapes hold the lock while they sum, so two of them never see a shard that is
        # being folded into the retired one twice. Requests never take it.
        with self._lock:
            self._settle()
            for shard in (self._retired, *self._shards):
                _add_shard(total, shard, self._native)
        return total

    def _settle(self) -> None:
        """Take in the new shards, fold the ended ones into the retired shard (under the
        lock)."""
        # Ended first: a shard is born before it can end, so every shard taken here is
        # either in the list already or among the born taken next. (Born first, a thread
        # could be born and end in between: its shard would be folded now and listed
        # later, counted twice.)
        ended = _take(self._ended)
        born = _take(self._born)
        if not ended:
            self._shards.extend(born)
            return
        gone = {id(shard) for shard in ended}
        self._shards = [shard for shard in (*self._shards, *born) if id(shard) not in gone]
        for shard in ended:
            # Its owner is gone with the thread's storage: nothing writes to it any more.
            _add_shard(self._retired, shard, self._native)


class NativeRequestStore(RequestStore):
    """A :class:`RequestStore` that also keeps the native form of every histogram series
    (``native_histograms=True``), in the same per-thread shards, without a lock.

    Each classic series carries its native state as its last element (one lookup per
    request finds both). A request goes into its native bucket (or the zero bucket)
    first, then into the classic series, so a scrape can read both forms of one moment
    (:func:`_copy_native`). A series that would hold more than ``max_buckets`` buckets
    halves its resolution (:func:`~asgi_metrics.core.native.capped`); a scrape sums the
    shards at their smallest schema and caps the sum too.

    :meth:`observe` and :meth:`_add` are :class:`RequestStore`'s with the native bucket
    added in the same body: calling the classic method from here would cost a second
    frame, shard lookup and series lookup per request (about a third of what the native
    form adds). ``tests/unit/test_native_store.py`` checks that both stores record the
    same classic numbers, exemplars and in-flight counts.
    """

    def __init__(
        self,
        buckets: tuple[float, ...],
        size_buckets: tuple[float, ...],
        max_label_sets: int = 2000,
        on_overflow: Callable[[str], None] | None = None,
        *,
        bucket_factor: float = 1.1,
        max_buckets: int = 160,
        zero_threshold: float = native.DEFAULT_ZERO_THRESHOLD,
    ) -> None:
        super().__init__(buckets, size_buckets, max_label_sets, on_overflow)
        self.native_schema = native.pick_schema(bucket_factor)
        self._native = _NativeConfig(zero_threshold, max_buckets)
        self._zero = zero_threshold
        self._max_buckets = max_buckets

    def _new_series(self, table: dict[Key, Series], name: str, key: Key,
                    width: int) -> tuple[Key, Series]:
        """The slow path: ``key`` is new to this shard's ``table``."""
        key = self._admit(name, key)
        series = table.get(key)
        if series is None:
            b = native.BUCKETINGS[self.native_schema]
            state = [{SCHEMA_KEY: self.native_schema, ZERO_KEY: 0},
                     b.bounds, b.mult, b.add, b.shift]
            series = table[key] = [*([0.0] * width), state]  # type: ignore[list-item]
        return key, series

    def _new_bucket(self, state: NativeState, index: int) -> None:
        """The slow path: the first request in bucket ``index``; halve the resolution
        while the series holds more than ``max_buckets`` buckets."""
        buckets = state[0]
        buckets[index] = 1
        schema = buckets[SCHEMA_KEY]
        if len(buckets) - 2 <= self._max_buckets or schema <= native.SCHEMA_MIN:
            return
        real = {i: n for i, n in buckets.items() if i != SCHEMA_KEY and i != ZERO_KEY}
        schema, real = native.capped(schema, real, self._max_buckets)
        real[SCHEMA_KEY] = schema
        real[ZERO_KEY] = buckets[ZERO_KEY]
        b = native.BUCKETINGS[schema]
        # One slice assignment: a scrape reads the old state or the new one, never a mix.
        state[:] = [real, b.bounds, b.mult, b.add, b.shift]

    def _outside(self, state: NativeState, value: float) -> None:
        """A value at most the zero threshold, +Inf or NaN."""
        buckets = state[0]
        if value > self._zero:  # +Inf: the bucket above the largest float's
            index = native.bucket_index(value, buckets[SCHEMA_KEY])
            if index in buckets:
                buckets[index] += 1
            else:
                self._new_bucket(state, index)
        else:  # zero (and NaN, which has no bucket: the two forms' counts must agree)
            buckets[ZERO_KEY] += 1

    def observe(
        self,
        key: Key,
        duration: float,
        ended: str | None = None,
        exemplar: tuple[int, int] | None = None,
    ) -> Series:
        """:meth:`RequestStore.observe`, and the native bucket."""
        series = RequestStore.observe(self, key, duration, ended, exemplar)
        self._count_native(series[-1], duration)  # type: ignore[arg-type]
        return series

    def _add(
        self,
        shard: _Shard,
        name: str,
        table: dict[Key, Series],
        key: Key,
        value: float,
        bounds: tuple[float, ...],
        width: int,
    ) -> Series:
        series = RequestStore._add(self, shard, name, table, key, value, bounds, width)
        self._count_native(series[-1], value)  # type: ignore[arg-type]
        return series

    def _count_native(self, state: NativeState, value: float) -> None:
        """One observation into a series' native buckets (its state, kept at its end)."""
        buckets, bounds, mult, add, shift = state
        if self._zero < value < _INF:
            frac, exp = frexp(value)
            bucket = (bisect_left(bounds, frac) + exp * mult + add) >> shift
            try:
                buckets[bucket] += 1
            except KeyError:
                self._new_bucket(state, bucket)
        else:
            self._outside(state, value)


def _take(handed: deque[_Shard]) -> list[_Shard]:
    # popleft one at a time, not a copy and clear(): a thread may append in between.
    taken = []
    while handed:
        taken.append(handed.popleft())
    return taken



def _add_shard(total: Snapshot | _Shard, shard: _Shard, config: _NativeConfig | None) -> None:
    for name in _HISTOGRAMS:
        if config is None:
            _sum_series(getattr(total, name), getattr(shard, name))
            continue
        _sum_native(total, name, getattr(shard, name), config)
        if shard.retired_native[name]:
            target = _native_target(total, name)
            for key, part in shard.retired_native[name].items():
                # A copy: the retired shard's own series must not leave with a snapshot.
                _merge_into(target, key, replace(part, positive=dict(part.positive)), config)
    _sum_counts(total.in_flight, shard.in_flight)
    _sum_counts(total.exceptions, shard.exceptions)
    _latest_exemplars(total.exemplars, shard.exemplars)


def _sum_series(total: dict[Key, Series], part: dict[Key, Series]) -> None:
    # list(dict.items()) and list[:] are single C calls, so each copy is taken whole even
    # while the owning thread keeps writing.
    for key, series in list(part.items()):
        values = series[:]
        acc = total.get(key)
        if acc is None:
            total[key] = values
        else:
            for index, value in enumerate(values):
                acc[index] += value


@dataclass(frozen=True)
class _NativeConfig:
    zero_threshold: float
    max_buckets: int


def _native_target(total: Snapshot | _Shard, name: str) -> dict[Key, NativeSeries]:
    if isinstance(total, Snapshot):
        return total.native.setdefault(name, {})
    return total.retired_native[name]


def _merge_into(
    target: dict[Key, NativeSeries], key: Key, part: NativeSeries, config: _NativeConfig
) -> None:
    acc = target.get(key)
    if acc is None:
        # ``part`` is the caller's own, fresh: taken as it is when it fits.
        if len(part.positive) <= config.max_buckets:
            target[key] = part
            return
        schema, positive = native.capped(part.schema, part.positive, config.max_buckets)
        target[key] = NativeSeries(schema, part.zero_threshold, part.zero_count, part.count,
                                   part.sum, positive)
    else:
        merged = native.merge((acc, part), config.max_buckets)
        assert merged is not None  # two parts
        target[key] = merged


def _sum_native(
    total: Snapshot | _Shard, name: str, part: dict[Key, Series], config: _NativeConfig
) -> None:
    """Add histogram ``name`` of a shard of a :class:`NativeRequestStore` to ``total``:
    the classic series to the classic table, their native states (their last element)
    as :class:`~asgi_metrics.core.native.NativeSeries`, each series read so that both
    forms count the same requests (see :func:`_copy_native`). The retired shard's classic
    series carry no native state: its native series are in ``retired_native``."""
    totals = getattr(total, name)
    target = _native_target(total, name)
    for key, series in list(part.items()):
        if isinstance(series[-1], list):
            values, native_part = _copy_native(series, config.zero_threshold)
            _merge_into(target, key, native_part, config)
        else:
            values = series[:]
        acc = totals.get(key)
        if acc is None:
            totals[key] = values
        else:
            for index, value in enumerate(values):
                acc[index] += value


def _copy_native(series: Series, zero_threshold: float) -> tuple[Series, NativeSeries]:
    """A live classic series (without its native state) and its native form, counting
    the same requests.

    The owning thread writes the native form of a request first, then the classic one. So
    when two copies of the classic series, taken before and after the copy of the native
    buckets, are equal and count as many requests as the native buckets, no request was
    half-recorded: all three are of the same moment. Otherwise a request is being
    recorded: give its thread the GIL (``sleep(0)``) and read again, a bounded number of
    times (then the native count is its own buckets', which Prometheus requires).
    """
    for _ in range(_CONSISTENT_READS):
        values = series[:]
        state: NativeState = values.pop()  # type: ignore[assignment]
        buckets = state[0].copy()
        again = series[:-1]
        count = int(sum(values[1:]))
        schema = buckets.pop(SCHEMA_KEY)
        zero = buckets.pop(ZERO_KEY)
        recorded = zero + sum(buckets.values())
        if recorded == count and again == values:
            break
        sleep(0)
    else:
        count = recorded
    return values, NativeSeries(
        schema=schema,
        zero_threshold=zero_threshold,
        zero_count=zero,
        count=count,
        sum=values[0],
        positive=buckets,  # a copy; buckets are made with a count of 1, never empty
    )


def _sum_counts(total: dict[Any, int], part: dict[Any, int]) -> None:
    for key, value in list(part.items()):
        total[key] = total.get(key, 0) + value


def _latest_exemplars(total: dict[Key, ExemplarSlots], part: dict[Key, ExemplarSlots]) -> None:
    for key, slots in list(part.items()):
        slots = slots[:]
        acc = total.get(key)
        if acc is None:
            total[key] = slots
            continue
        for index, exemplar in enumerate(slots):
            if exemplar is not None:
                kept = acc[index]
                if kept is None or kept[3] < exemplar[3]:
                    acc[index] = exemplar


def latest_exemplar(slots: ExemplarSlots) -> Exemplar | None:
    """The most recent exemplar of a series (the one its request counter shows)."""
    latest: Exemplar | None = None
    for exemplar in slots:
        if exemplar is not None and (latest is None or exemplar[3] > latest[3]):
            latest = exemplar
    return latest


def cumulative(series: Series) -> Iterator[float]:
    """Yield the cumulative bucket counts of ``series`` (the ``le`` values' counts)."""
    running = 0.0
    for count in series[1:]:
        running += count
        yield running

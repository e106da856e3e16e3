"""Where finished requests are counted when several worker processes serve one app.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its numbers into memory-mapped
files in that directory (prometheus_client's multiprocess value class), and a scrape
answered by any worker sums the files of all of them (:mod:`asgi_metrics.multiprocess`).

The interface is :class:`~asgi_metrics.core.store.RequestStore`'s. Each series is one
prometheus_client value object, created on first use and cached, so the request path is a
dict lookup plus prometheus_client's own (short, process-wide) lock and an 16-byte mmap
write per value. Values are created directly rather than through ``Counter``/``Histogram``
objects: those would add a label lookup and a lock per request and nothing we need.

The request counter (``http_requests_total``) is not written at all: a scrape derives it
from the duration histogram's ``_count``, exactly as the single-process store does, so the
two can never disagree. Each store says so in the directory when it starts
(:func:`~asgi_metrics.multiprocess.announce_derived_counter`), so a process with no store
of its own (a listener in the gunicorn arbiter, a sidecar) derives the same counter.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import values

from asgi_metrics.compat import value_class_is_multiprocess
from asgi_metrics.core.label_cap import LabelSetCap
from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import Family, MetricNames, bucket_labels
from asgi_metrics.core.settings import ConfigurationError
from asgi_metrics.core.store import Snapshot
from asgi_metrics.multiprocess.directory import announce_derived_counter, multiproc_dir
from asgi_metrics.multiprocess.exemplar_files import ExemplarFile

#: Set by the start-up check when prometheus_client's value class is not multiprocess.
ENV_AFTER_IMPORT = (
    "PROMETHEUS_MULTIPROC_DIR is set, but prometheus_client was imported before it was set"
    " and already chose its single-process value class, so every worker would report only"
    " its own numbers. Set the variable in the environment of the server process (the"
    " shell, systemd unit, Dockerfile, or gunicorn's raw_env / the top of gunicorn.conf.py"
    " before anything imports prometheus_client), not from the application code."
)


def multiprocess_value_class() -> Any:
    """prometheus_client's value class, checked to be the multiprocess one."""
    if not value_class_is_multiprocess():
        raise ConfigurationError(ENV_AFTER_IMPORT)
    return values.ValueClass


class _Histogram:
    """The value objects of one histogram family: per key ``[sum, bucket_0, ..., +Inf]``."""

    __slots__ = ("bounds", "family", "les", "series", "table")

    def __init__(self, table: str, family: Family, bounds: tuple[float, ...]) -> None:
        self.table = table  # its name for the label-set cap
        self.family = family
        self.bounds = bounds
        self.les = bucket_labels(bounds)
        self.series: dict[Key, list[Any]] = {}


class MultiprocessStore:
    """Counts requests into prometheus_client's per-process files (multiprocess mode).

    Same interface as :class:`~asgi_metrics.core.store.RequestStore` for recording;
    :meth:`snapshot` is empty, because the numbers of one worker mean nothing on their
    own: the exposition reads the directory instead.
    """

    multiprocess = True

    def __init__(
        self,
        names: MetricNames,
        const_labels: Mapping[str, str],
        buckets: tuple[float, ...],
        size_buckets: tuple[float, ...],
        max_label_sets: int = 2000,
        on_overflow: Callable[[str], None] | None = None,
        directory: str | None = None,
    ) -> None:
        self._value_class = multiprocess_value_class()
        self.directory = directory or multiproc_dir()
        # The PID that last announced the derived request counter (see _announce).
        self._announced_pid: int | None = None
        # Per worker: the directory can hold up to workers x max_label_sets series.
        self.max_label_sets = max_label_sets
        self._cap = LabelSetCap(max_label_sets, on_overflow)
        self.names = names
        self.buckets = buckets
        self.size_buckets = size_buckets
        self._const_names = tuple(const_labels)
        self._const_values = tuple(const_labels.values())
        # Only taken when a series is seen for the first time in this process: two value
        # objects for one series would each keep their own running total and overwrite
        # each other's writes.
        self._lock = threading.Lock()
        self._duration = _Histogram("requests", names.duration, buckets)
        self._ttfb = (
            None if names.time_to_first_byte is None
            else _Histogram("ttfb", names.time_to_first_byte, buckets)
        )
        self._request_size = (
            None if names.request_size is None
            else _Histogram("request_size", names.request_size, size_buckets)
        )
        self._response_size = (
            None if names.response_size is None
            else _Histogram("response_size", names.response_size, size_buckets)
        )
        self._in_flight: dict[str, Any] = {}
        self._exceptions: dict[Key, Any] = {}
        #: The duration histogram's exemplars (:mod:`~asgi_metrics.multiprocess.exemplar_files`).
        self.exemplars = None if self.directory is None else ExemplarFile(
            self.directory, names.duration.name, [*names.duration.labels, *self._const_names],
            self._const_values, self._duration.les,
        )
        self._announce()

    def _announce(self) -> None:
        """Write which counter is derived from which histogram to the directory (see
        :func:`~asgi_metrics.multiprocess.announce_derived_counter`).

        Also called on this process' first request series: with gunicorn ``--preload``
        the store is built in the arbiter before ``on_starting`` empties the directory, and
        the forked workers never build it again.
        """
        self._announced_pid = os.getpid()
        requests = self.names.requests
        if requests is None or self.directory is None:
            return  # the OpenTelemetry preset has no separate request counter
        try:
            announce_derived_counter(self.directory, requests.name, requests.help,
                                     self.names.duration.name)
        except Exception as exc:  # start-up, or a first series: never break either
            logging.getLogger("asgi_metrics").warning(
                "HTTP metrics: could not write %s's description to %s (%s): processes"
                " without a middleware of their own will not show that counter.",
                requests.name, self.directory, exc,
            )

    # -- value objects -----------------------------------------------------------------

    def _labels(self, family: Family, key: tuple[str, ...]) -> tuple[list[str], list[str]]:
        return [*family.labels, *self._const_names], [*key, *self._const_values]

    def label_set_count(self, table: str) -> int:
        """How many distinct keys ``table`` holds in this worker (tests, diagnostics)."""
        return self._cap.count(table)

    def admit(self, table: str, key: Key) -> Key:
        """The key ``key`` is recorded under in ``table``: itself, or the overflow key past
        the label-set cap (for the native files, which follow the classic series)."""
        return self._cap.admit(table, key)

    def _new_series(self, hist: _Histogram, key: Key) -> list[Any]:
        admitted = self._cap.admit(hist.table, key)
        if admitted != key:
            # Past the cap: counted under the overflow series. The key itself is not kept,
            # so a flood of new keys costs this slow path each time, but no memory.
            return hist.series.get(admitted) or self._new_series(hist, admitted)
        with self._lock:
            series = hist.series.get(key)
            if series is not None:
                return series
            if self._announced_pid != os.getpid():
                self._announce()
            family = hist.family
            names, label_values = self._labels(family, key)
            make = self._value_class
            series = [make("histogram", family.name, f"{family.name}_sum", names,
                           label_values, family.help)]
            bucket_names = [*names, "le"]
            for le in hist.les:
                series.append(make("histogram", family.name, f"{family.name}_bucket",
                                   bucket_names, [*label_values, le], family.help))
            hist.series[key] = series
            return series

    def _new_gauge(self, method: str) -> Any:
        with self._lock:
            value = self._in_flight.get(method)
            if value is None:
                family = self.names.in_flight
                names, label_values = self._labels(family, (method,))
                # livesum: the sum over the workers alive now; a dead worker's file is
                # removed (child_exit, or the sweep at scrape time), taking its share along.
                value = self._value_class("gauge", family.name, family.name, names,
                                          label_values, family.help,
                                          multiprocess_mode="livesum")
                self._in_flight[method] = value
            return value

    def _new_exception(self, key: Key) -> Any:
        admitted = self._cap.admit("exceptions", key)
        if admitted != key:
            return self._exceptions.get(admitted) or self._new_exception(admitted)
        with self._lock:
            value = self._exceptions.get(key)
            if value is None:
                family = self.names.exceptions
                names, label_values = self._labels(family, key)
                value = self._value_class("counter", family.name, f"{family.name}_total",
                                          names, label_values, family.help)
                self._exceptions[key] = value
            return value

    @staticmethod
    def _observe(store: MultiprocessStore, hist: _Histogram, key: Key, value: float) -> None:
        series = hist.series.get(key)
        if series is None:
            series = store._new_series(hist, key)
        series[0].inc(value)
        series[bisect_left(hist.bounds, value) + 1].inc(1.0)

    # -- the RequestStore interface ----------------------------------------------------

    def start(self, method: str) -> None:
        """One more request of ``method`` in flight."""
        value = self._in_flight.get(method)
        if value is None:
            value = self._new_gauge(method)
        value.inc(1.0)

    def end(self, method: str) -> None:
        """One request of ``method`` fewer in flight. Pairs with :meth:`start`."""
        value = self._in_flight.get(method)
        if value is None:
            value = self._new_gauge(method)
        value.inc(-1.0)

    def observe(
        self,
        key: Key,
        duration: float,
        ended: str | None = None,
        exemplar: tuple[int, int] | None = None,
    ) -> None:
        """Count one finished request under ``key`` = (method, route, status); ``ended`` is
        the method to take out of the in-flight count at the same time, or ``None``.
        ``exemplar`` is the (trace_id, span_id) of the sampled span it was served in, kept
        as this worker's latest exemplar of its bucket in the exemplar file, or ``None``."""
        if ended is not None:
            self.end(ended)
        self._observe(self, self._duration, key, duration)
        if exemplar is not None and self.exemplars is not None:
            if key not in self._duration.series:  # past the label-set cap: the overflow one
                key = self._cap.admit(self._duration.table, key)
            self.exemplars.record(key, bisect_left(self.buckets, duration), exemplar[0],
                                  exemplar[1], duration)

    def observe_extra(
        self,
        key: Key,
        ttfb: float | None,
        request_size: int | None,
        response_size: int | None,
    ) -> None:
        """Record the optional histograms (each ``None`` when that one is off)."""
        if ttfb is not None and self._ttfb is not None:
            self._observe(self, self._ttfb, key, ttfb)
        if request_size is not None and self._request_size is not None:
            self._observe(self, self._request_size, key, request_size)
        if response_size is not None and self._response_size is not None:
            self._observe(self, self._response_size, key, response_size)

    def count_exception(self, key: Key) -> None:
        """Count one exception under ``key`` = (method, route, exception type)."""
        value = self._exceptions.get(key)
        if value is None:
            value = self._new_exception(key)
        value.inc(1.0)

    def snapshot(self) -> Snapshot:
        """Empty: in multiprocess mode the numbers are read from the directory."""
        return Snapshot()

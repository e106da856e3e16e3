"""The library's own series (:mod:`asgi_metrics.core.self_metrics`) in multiprocess mode:
each count also written to this process' prometheus_client files, as the store's counters
are, so a scrape of any worker shows them summed over every worker, dead ones included
(their files are compacted into the archives like the store's).

Counts happen on paths that are slow already (a fold, an overflow, a failure) or off the
request path (a scrape), so the mmap write and prometheus_client's lock it takes cost
requests nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from bisect import bisect_left
from collections.abc import Mapping
from typing import Any

from asgi_metrics.core.naming import Family, SelfFamilies, bucket_labels
from asgi_metrics.core.self_metrics import RENDER_BUCKETS, SCRAPE_RESULTS
from asgi_metrics.multiprocess.store import multiprocess_value_class

logger = logging.getLogger("asgi_metrics")


class SelfMetricsFiles:
    """A :class:`~asgi_metrics.core.self_metrics.Mirror` writing to prometheus_client's
    multiprocess files. Every family a single process always shows (the scrape counter's
    three results, the rendering histogram) is there from the start, at zero."""

    def __init__(self, families: SelfFamilies, const_labels: Mapping[str, str]) -> None:
        self._make = multiprocess_value_class()
        self._const_names = list(const_labels)
        self._const_values = list(const_labels.values())
        self._families = {"folded": families.folded, "overflowed": families.overflowed,
                          "failures": families.failures, "scrapes": families.scrapes}
        self._lock = threading.Lock()  # only for a series seen for the first time
        self._values: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._failed = False
        for result in SCRAPE_RESULTS:
            self._value("scrapes", (result,))
        render = families.render
        names = [*render.labels, *self._const_names]
        self._render = [self._make("histogram", render.name, f"{render.name}_sum", names,
                                   self._const_values, render.help)]
        for le in bucket_labels(RENDER_BUCKETS):
            self._render.append(self._make("histogram", render.name, f"{render.name}_bucket",
                                           [*names, "le"], [*self._const_values, le],
                                           render.help))

    def _value(self, table: str, key: tuple[str, ...]) -> Any:
        with self._lock:
            value = self._values.get((table, key))
            if value is None:
                family: Family = self._families[table]
                value = self._values[(table, key)] = self._make(
                    "counter", family.name, f"{family.name}_total",
                    [*family.labels, *self._const_names], [*key, *self._const_values],
                    family.help,
                )
            return value

    def add(self, table: str, key: tuple[str, ...]) -> None:
        """One more in ``table``'s series ``key``."""
        try:
            value = self._values.get((table, key)) or self._value(table, key)
            value.inc(1.0)
        except Exception:
            self._report()

    def observe_render(self, seconds: float) -> None:
        """One rendering took ``seconds``."""
        try:
            self._render[0].inc(seconds)
            self._render[bisect_left(RENDER_BUCKETS, seconds) + 1].inc(1.0)
        except Exception:
            self._report()

    def _report(self) -> None:
        # Not through the failure log: its failures are counted here, and a broken
        # directory would make every report fail again.
        if not self._failed:
            self._failed = True
            with contextlib.suppress(Exception):
                logger.exception("HTTP metrics: writing the library's own counts to the"
                                 " multiprocess directory failed (logged once)")

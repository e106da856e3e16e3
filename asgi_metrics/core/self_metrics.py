"""The library's reports on itself, so users can alert on it: label values folded into
``__other__``, label sets folded into a family's overflow series, recording failures,
scrapes answered and refused, and how long renderings take.

Every count here is taken on a path that is already slow (a fold takes its bound's lock, a
refused label set the cap's lock, a failure the failure log's) or off the request path (a
scrape), so the request path pays nothing for it. Every label is bounded: declared label
names, family names, the fixed stages of the failure log, three scrape results.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Protocol

from asgi_metrics.core.failures import FailureLog

#: Bucket bounds of the scrape rendering duration histogram, seconds.
RENDER_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
#: The results a scrape is counted under.
SCRAPE_RESULTS = ("answered", "rejected", "unauthorized")


class Mirror(Protocol):
    """Where every count is also written (multiprocess mode: this process' files, so that
    a scrape of any worker shows the sum over all of them). Never raises."""

    def add(self, table: str, key: tuple[str, ...]) -> None:
        """One more in ``table`` (``folded``, ``overflowed``, ``failures``, ``scrapes``)."""

    def observe_render(self, seconds: float) -> None:
        """One rendering took ``seconds``."""


class SelfMetrics:
    """The counts of one middleware's store (see the module docs)."""

    def __init__(self, failures: FailureLog) -> None:
        self.failures = failures
        self._mirror: Mirror | None = None
        self._lock = threading.Lock()
        self._folded: dict[tuple[str, ...], int] = {}
        self._overflowed: dict[tuple[str, ...], int] = {}
        self._scrapes: dict[tuple[str, ...], int] = {(result,): 0 for result in SCRAPE_RESULTS}
        # [sum, n_0, ..., +Inf], as the store's histograms.
        self._render = [0.0] * (len(RENDER_BUCKETS) + 2)

    def mirror_to(self, mirror: Mirror) -> None:
        """Write every count from now on to ``mirror`` too, failures included."""
        self._mirror = mirror
        self.failures.listener = lambda kind: mirror.add("failures", (kind,))

    def count_fold(self, label: str) -> None:
        """A value of the request-derived label ``label`` was recorded as ``__other__``."""
        with self._lock:
            self._folded[(label,)] = self._folded.get((label,), 0) + 1
        if self._mirror is not None:
            self._mirror.add("folded", (label,))

    def count_overflow(self, family: str) -> None:
        """A label set of ``family`` was counted in its overflow series."""
        with self._lock:
            self._overflowed[(family,)] = self._overflowed.get((family,), 0) + 1
        if self._mirror is not None:
            self._mirror.add("overflowed", (family,))

    def count_scrape(self, result: str) -> None:
        """A scrape was answered, rejected (503, too many at once) or unauthorized (401)."""
        with self._lock:
            self._scrapes[(result,)] = self._scrapes.get((result,), 0) + 1
        if self._mirror is not None:
            self._mirror.add("scrapes", (result,))

    def observe_render(self, seconds: float) -> None:
        """One rendering of ``/metrics`` took ``seconds``."""
        with self._lock:
            self._render[0] += seconds
            self._render[bisect_left(RENDER_BUCKETS, seconds) + 1] += 1
        if self._mirror is not None:
            self._mirror.observe_render(seconds)

    def tables(self) -> dict[str, dict[tuple[str, ...], int]]:
        """The counters by family key (``folded``, ``overflowed``, ``failures``,
        ``scrapes``), each ``{label values: count}``."""
        with self._lock:
            tables = {
                "folded": dict(self._folded),
                "overflowed": dict(self._overflowed),
                "scrapes": dict(self._scrapes),
            }
        tables["failures"] = {(stage,): count for stage, count in self.failures.counts().items()}
        return tables

    def render_series(self) -> list[float]:
        """The rendering duration histogram, ``[sum, n_0, ..., +Inf]``."""
        with self._lock:
            return self._render[:]

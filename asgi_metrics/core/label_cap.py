"""The hard cap on distinct label sets per metric family, shared by both stores.

A store asks :meth:`LabelSetCap.admit` only when a key is new to it (its slow path), so
keys already present never take the lock. Past ``max_label_sets`` distinct keys a new key
is recorded under :data:`OVERFLOW_KEY` instead, so no traffic can make a family hold more
than ``max_label_sets`` series. In multiprocess mode the cap holds per worker process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

from asgi_metrics.core.failures import logger
from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import Family, MetricNames

#: The label value of the one series that counts everything past the cap.
OVERFLOW = "__overflow__"
OVERFLOW_KEY: Key = (OVERFLOW, OVERFLOW, OVERFLOW)
#: The capped tables, one per family (the request counter and the duration histogram
#: share ``requests``).
CAPPED_TABLES = ("requests", "exceptions", "ttfb", "request_size", "response_size")


class LabelSetCap:
    """Admits at most ``max_label_sets`` distinct keys per table."""

    def __init__(
        self, max_label_sets: int, on_overflow: Callable[[str], None] | None = None
    ) -> None:
        self.max_label_sets = max_label_sets
        self._on_overflow = on_overflow
        self._lock = threading.Lock()
        self._admitted: dict[str, set[Key]] = {name: set() for name in CAPPED_TABLES}

    def admit(self, table: str, key: Key) -> Key:
        """The key to record under: ``key`` itself, or :data:`OVERFLOW_KEY` past the cap.

        The last slot of the cap is kept for the overflow key, so a table never exceeds
        ``max_label_sets``. ``on_overflow(table)`` is called for every key refused (the
        slow path: a refused key is never added to a shard, so it comes back here).
        """
        with self._lock:
            admitted = self._admitted[table]
            if key in admitted:
                return key
            if len(admitted) < self.max_label_sets - 1:
                admitted.add(key)
                return key
            # Request-derived labels make keys longer: every label of it is the overflow.
            overflow = OVERFLOW_KEY if len(key) == 3 else (OVERFLOW,) * len(key)
            admitted.add(overflow)
        if self._on_overflow is not None:
            self._on_overflow(table)
        return overflow

    def count(self, table: str) -> int:
        """How many distinct keys ``table`` holds (tests, diagnostics)."""
        with self._lock:
            return len(self._admitted[table])


def overflow_warning(
    names: MetricNames,
    max_label_sets: int,
    count: Callable[[str], None] | None = None,
) -> Callable[[str], None]:
    """The ``on_overflow`` callback of a store: one warning naming the families of a
    table, the first time the cap refuses one of its label sets, and ``count(family)``
    for every refusal (the self-observation counter)."""
    warned: set[str] = set()
    tables: dict[str, list[Family | None]] = {
        "requests": [names.requests, names.duration],
        "exceptions": [names.exceptions],
        "ttfb": [names.time_to_first_byte],
        "request_size": [names.request_size],
        "response_size": [names.response_size],
    }

    def warn(table: str) -> None:
        families = [family.name for family in tables.get(table, []) if family is not None]
        if count is not None:
            count(families[0] if families else table)
        if table in warned:
            return
        warned.add(table)  # racy: at worst a second warning
        shown = ", ".join(families) or table
        # A broken logging set-up must not break a request.
        with contextlib.suppress(Exception):
            logger.warning(
                "HTTP metrics: %s reached max_label_sets=%d distinct label sets; further new"
                " label sets are counted in the series labelled %r. Check for a route"
                " resolver or label returning raw values, or raise max_label_sets.",
                shown, max_label_sets, OVERFLOW,
            )

    return warn

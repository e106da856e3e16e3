"""The in-flight gauge by route in multiprocess mode: each worker publishes its own.

A scrape answered by one worker cannot ask another which routes its requests are in. So
each worker keeps its requests in flight by identity (as a single process does, see
:mod:`asgi_metrics.core.in_flight`) and a small thread of its own writes their counts by
(method, route) into its gauge files every ``interval`` seconds (``livesum`` gauges:
summed over the live workers, a dead worker's share gone with its files). The request
path is unchanged (one dict insert, one removal); a stuck request shows under its route
within ``interval`` in any worker's scrape, and at once in its own worker's.

The thread is started in the process that builds the store and again in every process
forked from it (``os.register_at_fork``), so gunicorn ``--preload`` workers publish
their own requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.in_flight import InFlightRequests
from asgi_metrics.core.naming import Family
from asgi_metrics.multiprocess.store import multiprocess_value_class

#: Seconds between two publications of one worker's counts.
DEFAULT_INTERVAL = 0.5

# Held strongly, so that a forked child (whose copy of the publishing thread is gone)
# still finds them to restart; dropped once their requests are gone.
_publishers: set[InFlightPublisher] = set()


class InFlightPublisher:
    """Writes one worker's in-flight requests by (method, route) into its gauge files."""

    def __init__(
        self,
        in_flight: InFlightRequests,
        family: Family,
        const_labels: Mapping[str, str],
        failures: FailureLog,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        # Weakly: the recorder holds the requests, and a dropped middleware (a test
        # suite's) takes them along, which ends this publisher's thread.
        self._in_flight = weakref.ref(in_flight)
        self.family = family
        self.failures = failures
        self.interval = interval
        self._value_class = multiprocess_value_class()
        self._const_names = list(const_labels)
        self._const_values = list(const_labels.values())
        self._values: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # publish() from the thread and from a local scrape
        self._pid = 0
        for gone in [p for p in _publishers if p._in_flight() is None]:
            _publishers.discard(gone)
        _publishers.add(self)
        self.start()

    def start(self) -> None:
        """Start this process' publishing thread (once per process)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._values = {}  # the parent's value objects write into the parent's files
        threading.Thread(
            target=self._run, name="http-metrics-in-flight", daemon=True
        ).start()

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid and self.publish():
            time.sleep(self.interval)
        _publishers.discard(self)

    def publish(self) -> bool:
        """Write the current counts now (every known series: gone ones go back to 0).
        ``False`` once the requests are gone (the middleware was dropped)."""
        in_flight = self._in_flight()
        if in_flight is None:
            return False
        try:
            counts = in_flight.counts(self.failures)
            with self._lock:
                for key in self._values.keys() - counts.keys():
                    self._values[key].set(0.0)
                for key, count in counts.items():
                    value = self._values.get(key)
                    if value is None:
                        value = self._values[key] = self._new(key)
                    value.set(float(count))
        except Exception as exc:
            self.failures.report("publishing the in-flight requests by route", exc)
        return True

    def _new(self, key: tuple[str, str]) -> Any:
        family = self.family
        return self._value_class(
            "gauge", family.name, family.name, [*family.labels, *self._const_names],
            [*key, *self._const_values], family.help, multiprocess_mode="livesum",
        )


def _restart_after_fork() -> None:
    for publisher in list(_publishers):
        if publisher._in_flight() is None:
            _publishers.discard(publisher)
            continue
        with contextlib.suppress(Exception):
            publisher.start()


try:
    os.register_at_fork(after_in_child=_restart_after_fork)
except AttributeError:  # no fork() on this platform: nothing to restart
    logging.getLogger("asgi_metrics").debug("os.register_at_fork is not available")

"""Failures of the metrics code itself: logged, rate-limited, never raised into a request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("asgi_metrics")


class FailureLog:
    """Logs the first failure of each kind with its traceback, then at most one summary
    line per ``interval`` seconds with how many more there were."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, int]] = {}  # kind -> (last logged, suppressed)
        self._counts: dict[str, int] = {}  # kind -> failures, logged or not
        #: Called with the kind of every failure reported, outside the lock (multiprocess
        #: mode: the count goes to this process' files too); must not raise.
        self.listener: Callable[[str], None] | None = None

    def report(self, kind: str, exc: BaseException) -> None:
        """Record that ``kind`` (e.g. "recording", "route lookup") failed with ``exc``."""
        try:
            if self.listener is not None:
                self.listener(kind)
            now = time.monotonic()
            with self._lock:
                self._counts[kind] = self._counts.get(kind, 0) + 1
                last = self._state.get(kind)
                if last is not None and now - last[0] < self.interval:
                    self._state[kind] = (last[0], last[1] + 1)
                    return
                suppressed = 0 if last is None else last[1]
                self._state[kind] = (now, 0)
            if last is None:
                logger.error(
                    "HTTP metrics: %s failed; the request was served, its metrics may be"
                    " incomplete. Further failures of this kind are summarised.",
                    kind, exc_info=exc,
                )
            else:
                logger.error(
                    "HTTP metrics: %s failed %d more times; latest: %s: %s",
                    kind, suppressed + 1, type(exc).__name__, exc,
                )
        except Exception:  # logging itself is broken: nothing more we can do
            pass

    def counts(self) -> dict[str, int]:
        """How many failures of each kind were reported (logged or summarised)."""
        with self._lock:
            return dict(self._counts)

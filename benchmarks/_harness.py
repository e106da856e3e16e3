"""Shared measurement machinery: interleaved repeats, medians, variant bookkeeping."""

from __future__ import annotations

import gc
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A batch runner executes the variant ``n`` times and returns elapsed seconds for the loop alone.
BatchRunner = Callable[[int], float]


@dataclass
class Outcome:
    """What happened to one variant: measured samples, or why it was skipped / failed."""

    name: str
    kind: str  # "bare", "ours", "peer", "floor", "empty"
    status: str = "ok"  # "ok", "skipped", "error"
    reason: str = ""
    samples_us: list[float] = field(default_factory=list)

    @property
    def median_us(self) -> float | None:
        return statistics.median(self.samples_us) if self.samples_us else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "samples_us": [round(s, 4) for s in self.samples_us],
            "median_us": None if self.median_us is None else round(self.median_us, 4),
        }


def short_error(exc: BaseException) -> str:
    """One line naming the exception and where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:300]


def interleave(
    runners: dict[str, BatchRunner], outcomes: dict[str, Outcome], n: int, repeats: int
) -> None:
    """Run every runner ``repeats`` times in round-robin order (A B C A B C ...).

    Each sample is microseconds per request for one batch of ``n``. A variant that raises
    mid-measurement is marked as an error and dropped from later rounds.
    """
    for _ in range(repeats):
        for name, run in list(runners.items()):
            gc.collect()
            try:
                elapsed = run(n)
            except Exception as exc:
                outcomes[name].status = "error"
                outcomes[name].reason = short_error(exc)
                outcomes[name].samples_us.clear()
                del runners[name]
                continue
            outcomes[name].samples_us.append(elapsed * 1e6 / n)


def overheads(outcomes: dict[str, Outcome], baseline: str) -> dict[str, float]:
    """median(variant) - median(baseline) in microseconds, for every measured variant."""
    base = outcomes[baseline].median_us if baseline in outcomes else None
    if base is None:
        return {}
    return {
        name: o.median_us - base
        for name, o in outcomes.items()
        if o.median_us is not None and name != baseline
    }


def ratios_to(ours: float | None, others: dict[str, float]) -> dict[str, float | None]:
    """ours / other for each other overhead; None where undefined (non-positive)."""
    if ours is None:
        return {}
    return {name: (ours / v if v > 0 else None) for name, v in others.items()}

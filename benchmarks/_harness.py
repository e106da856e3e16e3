"""Shared measurement machinery: interleaved repeats, medians, variant bookkeeping."""

from __future__ import annotations

import gc
import inspect
import random
import statistics
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

# A batch runner executes the variant ``n`` times and returns elapsed seconds for the loop alone.
BatchRunner = Callable[[int], float]

#: The clock batches are timed with: CPU time of this process, not wall time. The machine is
#: a shared 2-core VM; while other processes hold a core, wall time of a batch can double
#: while its CPU time does not move (measured: 85 vs 85-220 ms for the same batch). The work
#: measured is single-threaded CPU work, so CPU time is the cost we want.
clock = time.process_time


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

    @property
    def mad_us(self) -> float | None:
        """Median absolute deviation of the samples: how much this variant wobbled."""
        median = self.median_us
        if median is None:
            return None
        return statistics.median(abs(s - median) for s in self.samples_us)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "reason": self.reason,
            "samples_us": [round(s, 4) for s in self.samples_us],
            "median_us": None if self.median_us is None else round(self.median_us, 4),
            "mad_us": None if self.mad_us is None else round(self.mad_us, 4),
        }


def short_error(exc: BaseException) -> str:
    """One line naming the exception and where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:300]


def registry_kwargs(factory: Callable[..., Any]) -> dict[str, Any]:
    """``{"registry": CollectorRegistry()}`` if ``factory`` takes a ``registry`` keyword
    (named, or through ``**options`` as our middleware does)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    takes = any(p.name == "registry" or p.kind is p.VAR_KEYWORD for p in params)
    return {"registry": CollectorRegistry()} if takes else {}


def counted(registry: CollectorRegistry, route: str, expected: int) -> str:
    """"ok" if our request counter in ``registry`` shows ``expected`` GET 200s on ``route``."""
    labels = {"method": "GET", "route": route, "status": "200"}
    got = registry.get_sample_value("http_requests_total", labels)
    if got == expected:
        return "ok"
    return f"MISMATCH: http_requests_total{labels} = {got}, expected {expected}"


def prepare(
    variants: Iterable[tuple[str, str, Callable[[], Any]]],
    check: Callable[[Any], None],
    make_runner: Callable[[Any], BatchRunner],
    warmup: int,
) -> tuple[dict[str, BatchRunner], dict[str, Outcome]]:
    """Build, check and warm up each (name, kind, build) variant.

    A build raising ImportError marks the variant skipped (package or our code not there
    yet); any other failure while building, checking or warming up marks it an error.
    """
    runners: dict[str, BatchRunner] = {}
    outcomes: dict[str, Outcome] = {}
    for name, kind, build in variants:
        outcome = outcomes[name] = Outcome(name, kind)
        try:
            app = build()
        except ImportError as exc:
            outcome.status, outcome.reason = "skipped", f"not importable: {exc}"
            continue
        except Exception as exc:
            outcome.status, outcome.reason = "error", f"build failed: {short_error(exc)}"
            continue
        try:
            check(app)
            runner = make_runner(app)
            runner(warmup)
        except Exception as exc:
            outcome.status, outcome.reason = "error", short_error(exc)
            continue
        runners[name] = runner
    return runners, outcomes


def interleave(
    runners: dict[str, BatchRunner], outcomes: dict[str, Outcome], n: int, repeats: int
) -> None:
    """Run every runner ``repeats`` times, each round in its own (seeded) shuffled order.

    Shuffled, not round-robin (A B C A B C ...): a batch pays for the caches the batch
    before it evicted, and in a fixed order one variant would always follow the same one
    (an option variant always running after OpenTelemetry's would be charged for it).
    Each sample is microseconds per request for one batch of ``n``. A variant that raises
    mid-measurement is marked as an error and dropped from later rounds.
    """
    for round_index in range(repeats):
        order = list(runners.items())
        random.Random(round_index).shuffle(order)
        for name, run in order:
            if name not in runners:
                continue
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


def paired_overheads(outcomes: dict[str, Outcome], baseline: str) -> dict[str, float]:
    """Median over rounds of (variant sample - baseline sample from the same round).

    Adjacent batches share whatever the machine was doing at the time, so this cancels slow
    drift that the difference of medians does not; reported beside it as a noise check.
    """
    base = outcomes[baseline].samples_us if baseline in outcomes else []
    result: dict[str, float] = {}
    for name, o in outcomes.items():
        if name == baseline or not o.samples_us or len(o.samples_us) != len(base):
            continue
        result[name] = statistics.median(v - b for v, b in zip(o.samples_us, base, strict=True))
    return result


def ratios_to(ours: float | None, others: dict[str, float]) -> dict[str, float | None]:
    """ours / other for each other overhead; None where undefined (non-positive)."""
    if ours is None:
        return {}
    return {name: (ours / v if v > 0 else None) for name, v in others.items()}


def options_added(
    outcomes: dict[str, Outcome], pairs: dict[str, tuple[str, str]]
) -> dict[str, float | None]:
    """What each of our options adds per request: the median over rounds of (with - without)
    from the same round. ``pairs``: option -> (variant with it, variant without it)."""
    added: dict[str, float | None] = {}
    for option, (with_it, without) in pairs.items():
        a, b = outcomes.get(with_it), outcomes.get(without)
        if a is None or b is None or not a.samples_us or not b.samples_us:
            added[option] = None
            continue
        added[option] = round(
            statistics.median(x - y for x, y in zip(a.samples_us, b.samples_us, strict=False)), 4
        )
    return added


def summarise(outcomes: dict[str, Outcome], baseline: str) -> dict[str, Any]:
    """Per-variant rows with overhead over ``baseline`` and ours/peer overhead ratios."""
    over = overheads(outcomes, baseline)
    paired = paired_overheads(outcomes, baseline)
    peers = {k: v for k, v in over.items() if outcomes[k].kind == "peer"}
    ratio = ratios_to(over.get("ours"), peers)
    variants = {}
    for name, o in outcomes.items():
        row = o.as_dict()
        row["overhead_us"] = None if name not in over else round(over[name], 4)
        row["paired_overhead_us"] = None if name not in paired else round(paired[name], 4)
        row["ours_over_this"] = None if ratio.get(name) is None else round(ratio[name], 4)
        variants[name] = row
    return {"baseline": baseline, "variants": variants}

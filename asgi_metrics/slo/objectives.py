"""Service level objectives as given on the command line, checked against the
configuration: ``--availability 99.9``, ``--latency 0.25:99``, ``--route TEMPLATE``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from asgi_metrics.core.checks import ConfigurationError
from asgi_metrics.slo import burn, promql
from asgi_metrics.slo.names import Names


@dataclass(frozen=True)
class Objective:
    """``target`` percent of the requests (of one ``route``, or of all when ``None``) are
    good: not a 5xx (availability, ``threshold=None``), or served within ``threshold``
    seconds (latency)."""

    target: Decimal
    threshold: float | None = None
    route: str | None = None

    @property
    def slo(self) -> str:
        """The value of the ``slo`` label: ``availability``, ``latency-0.25s``."""
        if self.threshold is None:
            return "availability"
        return f"latency-{self.threshold:g}s"

    @property
    def budget(self) -> Decimal:
        """The error budget: the share of requests allowed to be bad (0.001 for 99.9)."""
        return (100 - self.target) / 100

    def describe(self) -> str:
        """``99.9% of requests to /orders without a 5xx response``."""
        what = "requests" if self.route is None else f"requests to {self.route}"
        target = promql.number(self.target)
        if self.threshold is None:
            return f"{target}% of {what} without a 5xx response"
        return f"{target}% of {what} served within {self.threshold:g}s"


def _target(text: str, option: str) -> Decimal:
    try:
        target = Decimal(text.strip().removesuffix("%"))
    except InvalidOperation:
        raise ConfigurationError(
            f"{option}: expected a percentage like 99.9, got {text!r}"
        ) from None
    if not target.is_finite() or not 0 < target < 100:
        raise ConfigurationError(
            f"{option}: the target must be above 0 and below 100, got {text!r}"
        )
    # The fastest page burns at 14.4x: with a budget above 1/14.4 (a target below about
    # 93.06%) it would need more than 100% bad requests, and could never fire.
    fastest = max(c.factor for alert in burn.POLICY for c in alert.conditions)
    if fastest * (100 - target) / 100 >= 1:
        lowest = (100 - 100 / fastest).quantize(Decimal("0.01"), rounding=ROUND_CEILING)
        raise ConfigurationError(
            f"{option}: a target of {text}% leaves an error budget so large that a"
            f" {fastest}x burn would need more than 100% bad requests; the burn-rate"
            f" alerts need a target of at least {promql.number(lowest)}%"
        )
    return target


def availability(text: str) -> Decimal:
    """The target of ``--availability 99.9``."""
    return _target(text, "--availability")


def latency(text: str, names: Names) -> tuple[float, Decimal]:
    """``(threshold seconds, target)`` of ``--latency 0.25:99``; the threshold must be a
    bucket bound of the duration histogram."""
    threshold_text, sep, target_text = text.partition(":")
    if not sep:
        raise ConfigurationError(
            f"--latency: expected SECONDS:PERCENT like 0.25:99, got {text!r}"
        )
    try:
        threshold = float(threshold_text)
    except ValueError:
        raise ConfigurationError(
            f"--latency: expected a number of seconds, got {threshold_text!r}"
        ) from None
    # With a classic histogram "served within t" is the cumulative bucket le="t", so t
    # must be one of its bounds. A native histogram answers it for any t
    # (histogram_fraction in sli.py), to within one of its buckets.
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ConfigurationError(
            f"--latency: expected a positive number of seconds, got {threshold_text!r}"
        )
    if threshold not in names.buckets and not names.native:
        bounds = ", ".join(f"{b:g}" for b in names.buckets)
        raise ConfigurationError(
            f"--latency: {threshold_text}s is not a bucket bound of the duration histogram;"
            f" the bounds are {bounds} (pick one, or add it to the middleware's `buckets`"
            " setting and pass the same list with --buckets; or, with the middleware's"
            " native_histograms on, pass --native)"
        )
    return threshold, _target(target_text, "--latency")


def expand(
    availability_target: Decimal | None,
    latencies: Sequence[tuple[float, Decimal]],
    routes: Sequence[str],
) -> list[Objective]:
    """Every objective for every scope: each applies to all requests and, with routes
    given, to each of those routes too."""
    if routes and availability_target is None and not latencies:
        raise ConfigurationError("--route needs an objective (--availability or --latency)")
    thresholds = [threshold for threshold, _ in latencies]
    if len(set(thresholds)) != len(thresholds):
        raise ConfigurationError("--latency: each threshold may be given once")
    for route in routes:
        if not route:
            raise ConfigurationError("--route: expected a route template, got ''")
    if len(set(routes)) != len(routes):
        raise ConfigurationError("--route: each route may be given once")
    kinds: list[tuple[Decimal, float | None]] = []
    if availability_target is not None:
        kinds.append((availability_target, None))
    kinds.extend((target, threshold) for threshold, target in latencies)
    return [
        Objective(target, threshold, route)
        for target, threshold in kinds
        for route in (None, *routes)
    ]

"""The multi-window, multi-burn-rate alerting policy of the Google SRE workbook
(chapter "Alerting on SLOs", recommended parameters for a 30-day objective).

The burn rate is how fast the error budget is spent: 1x spends exactly the budget over the
30 days, 14.4x spends 2% of it in one hour. Each condition needs its long window (enough of
the budget spent to matter) AND its short window (still burning now, so the alert stops
soon after the problem is fixed) above the rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

#: The period the error budget and the burn-rate factors below are defined over.
PERIOD = "30d"

_UNITS = {"m": 60, "h": 3600, "d": 86400}


def seconds(window: str) -> int:
    """The length of a window such as ``5m``, ``6h`` or ``3d``, in seconds."""
    return int(window[:-1]) * _UNITS[window[-1]]


@dataclass(frozen=True)
class Condition:
    """Burning faster than ``factor`` over both ``long`` and ``short``."""

    factor: Decimal
    long: str
    short: str


@dataclass(frozen=True)
class BurnAlert:
    """One alert of the policy: fires when any of its conditions holds."""

    name: str
    severity: str
    conditions: tuple[Condition, ...]
    #: What the burn means, for the alert's description.
    action: str


FAST = BurnAlert(
    name="HTTPErrorBudgetBurnFast",
    severity="page",
    conditions=(Condition(Decimal("14.4"), "1h", "5m"), Condition(Decimal(6), "6h", "30m")),
    action="At this rate the whole budget is gone in 2 to 5 days",
)
SLOW = BurnAlert(
    name="HTTPErrorBudgetBurnSlow",
    severity="ticket",
    conditions=(Condition(Decimal(3), "1d", "2h"), Condition(Decimal(1), "3d", "6h")),
    action="At this rate the budget is gone in 10 to 30 days",
)
POLICY = (FAST, SLOW)


def windows() -> list[str]:
    """Every window the policy reads, shortest first: one recorded ratio each."""
    found = {w for alert in POLICY for c in alert.conditions for w in (c.long, c.short)}
    return sorted(found, key=seconds)

"""The service level indicators in PromQL: the share of bad requests over a window, for
each kind of objective. The rules and the dashboard both build their expressions here.

Errors are 5xx responses. A 499 (the client closed the connection first) and every 4xx
count as traffic and never as errors; ``status=~"5.."`` also matches the ``5xx`` of
``group_status=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asgi_metrics.slo import promql
from asgi_metrics.slo.names import Names
from asgi_metrics.slo.objectives import Objective


@dataclass(frozen=True)
class Ratio:
    """``part / total``: ``part`` counts the bad requests (availability: the 5xx, 0 when
    there are none), or the good ones when ``complement`` (latency: the histogram counts
    the requests within the threshold), the ratio then being ``1 - part / total``."""

    part: str
    total: str
    complement: bool = False

    def promql(self, *, multiline: bool) -> str:
        """One line (dashboard), or laid out over lines for a rules file (ends in a
        newline)."""
        if self.complement:
            if not multiline:
                return f"1 - ({self.part} / {self.total})"
            return f"1 - (\n  {self.part}\n    /\n  {self.total}\n)\n"
        # "or total * 0": a ratio of 0, not an absent series, while there is traffic
        # without a single 5xx (dashboards and the recorded ratios see an explicit 0).
        if not multiline:
            return f"({self.part} or {self.total} * 0) / {self.total}"
        return f"(\n  {self.part}\n    or\n  {self.total} * 0\n)\n  /\n{self.total}\n"


def rate(metric: str, matchers: Sequence[str], window: str, by: Sequence[str]) -> str:
    """``sum by (...) (rate(metric{...}[window]))``; a plain ``sum`` without ``by``."""
    grouping = f"sum by ({', '.join(by)}) " if by else "sum"
    return f"{grouping}(rate({promql.selector(metric, matchers)}[{window}]))"


def _within_threshold(
    names: Names, threshold: float, matchers: Sequence[str], window: str, by: Sequence[str]
) -> str:
    """The rate of requests served within ``threshold`` seconds.

    Classic histogram: the cumulative bucket whose bound is the threshold (objectives.py
    only accepts bounds). This is the seam for native histograms: they answer for any
    threshold, the good share being directly
    ``histogram_fraction(0, t, sum by (job) (rate(duration[w])))``.
    """
    matchers = [*matchers, promql.equal("le", names.le(threshold))]
    return rate(names.bucket, matchers, window, by)


def error_ratio(
    names: Names, window: str, *, matchers: Sequence[str], by: Sequence[str]
) -> Ratio:
    """The share of 5xx responses among all responses over ``window``."""
    total = rate(names.requests, matchers, window, by)
    errors = rate(names.requests, [*matchers, f'{names.status}=~"5.."'], window, by)
    return Ratio(errors, total)


def bad_ratio(
    names: Names,
    objective: Objective,
    window: str,
    *,
    matchers: Sequence[str] = (),
    by: Sequence[str] = ("job",),
) -> Ratio:
    """The share of bad requests for ``objective`` over ``window``, summed ``by`` these
    labels; ``matchers`` narrow the series further (the objective's route is added here)."""
    scope = list(matchers)
    if objective.route is not None:
        scope.append(promql.equal(names.route, objective.route))
    if objective.threshold is None:
        return error_ratio(names, window, matchers=scope, by=by)
    within = _within_threshold(names, objective.threshold, scope, window, by)
    return Ratio(within, rate(names.count, scope, window, by), complement=True)

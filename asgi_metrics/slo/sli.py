"""The service level indicators in PromQL: the share of bad requests over a window, for
each kind of objective. The rules and the dashboard both build their expressions here.

With native histograms (``Names.native``) every expression on the duration histogram reads
the classic series ``or`` the native one (``histogram_count``, ``histogram_sum``,
``histogram_quantile`` and ``histogram_fraction`` of ``rate(duration[w])``): Prometheus 2.x
with ``--enable-feature=native-histograms`` keeps only the native form of a histogram that
carries both, 3.x keeps both with ``always_scrape_classic_histograms``, and without the
feature only the classic one exists. ``or`` takes the classic value wherever it exists, per
label set, so both forms never add up.

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


def _native_rate(
    function: str, names: Names, matchers: Sequence[str], window: str, by: Sequence[str]
) -> str:
    grouping = f"sum by ({', '.join(by)}) " if by else "sum"
    selector = promql.selector(names.duration, matchers)
    return f"{grouping}({function}(rate({selector}[{window}])))"


def series_rate(
    names: Names, metric: str, matchers: Sequence[str], window: str, by: Sequence[str]
) -> str:
    """:func:`rate` of ``metric``; with native histograms, the duration histogram's
    ``_count`` or ``_sum`` from whichever form Prometheus keeps."""
    classic = rate(metric, matchers, window, by)
    function = {names.count: "histogram_count", names.sum: "histogram_sum"}.get(metric)
    if not names.native or function is None:
        return classic
    return f"({classic} or {_native_rate(function, names, matchers, window, by)})"


def quantile(
    names: Names, q: str, matchers: Sequence[str], window: str, by: Sequence[str]
) -> str:
    """The ``q`` quantile of the request duration, ``by`` these labels (``le`` added for
    the classic buckets); with native histograms, from whichever form Prometheus keeps."""
    classic = f"histogram_quantile({q}, {rate(names.bucket, matchers, window, (*by, 'le'))})"
    if not names.native:
        return classic
    return f"({classic} or histogram_quantile({q}, {rate(names.duration, matchers, window, by)}))"


@dataclass(frozen=True)
class NativeShare:
    """``1 - histogram_fraction(0, threshold, histogram)``: the share of a native
    histogram's requests slower than ``threshold``, ``or``-ed after the classic ``ratio``
    of the same objective when the threshold is a bucket bound (else native only)."""

    histogram: str
    threshold: float
    classic: Ratio | None = None

    def promql(self, *, multiline: bool) -> str:
        """As :meth:`Ratio.promql`."""
        native = f"1 - histogram_fraction(0, {self.threshold!r}, {self.histogram})"
        if self.classic is None:
            return f"{native}\n" if multiline else native
        classic = self.classic.promql(multiline=multiline)
        if not multiline:
            return f"({classic}) or ({native})"
        inner = "".join(f"  {line}\n" if line else "\n" for line in classic.splitlines())
        return f"(\n{inner})\nor\n(\n  {native}\n)\n"


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
    total = series_rate(names, names.requests, matchers, window, by)
    errors = series_rate(
        names, names.requests, [*matchers, f'{names.status}=~"5.."'], window, by
    )
    return Ratio(errors, total)


def bad_ratio(
    names: Names,
    objective: Objective,
    window: str,
    *,
    matchers: Sequence[str] = (),
    by: Sequence[str] = ("job",),
) -> Ratio | NativeShare:
    """The share of bad requests for ``objective`` over ``window``, summed ``by`` these
    labels; ``matchers`` narrow the series further (the objective's route is added here)."""
    scope = list(matchers)
    if objective.route is not None:
        scope.append(promql.equal(names.route, objective.route))
    if objective.threshold is None:
        return error_ratio(names, window, matchers=scope, by=by)
    classic = None
    if objective.threshold in names.buckets:
        within = _within_threshold(names, objective.threshold, scope, window, by)
        classic = Ratio(within, rate(names.count, scope, window, by), complement=True)
    if not names.native:
        assert classic is not None, "objectives.latency() accepts only bucket bounds"
        return classic
    return NativeShare(rate(names.duration, scope, window, by), objective.threshold, classic)

"""The Prometheus rules file for one configuration: the recording rules and alerts of
``example_apps/monitoring/rules.yml`` (which is this module's output for the defaults),
plus, for each objective, its recorded bad-request ratios and burn-rate alerts."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from asgi_metrics.slo import burn, promql, sli
from asgi_metrics.slo.names import Names
from asgi_metrics.slo.objectives import Objective
from asgi_metrics.slo.yaml_out import Commented, Folded, Literal, Spaced, dump

BASE_GROUP = "http_request_metrics"
SLO_GROUP = "http_request_slos"


@dataclass(frozen=True)
class Record:
    """A recording rule."""

    name: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)
    comment: tuple[str, ...] = ()

    def document(self) -> object:
        rule: dict[str, object] = {"record": self.name, "expr": _expr(self.expr)}
        if self.labels:
            rule["labels"] = dict(self.labels)
        return Commented(self.comment, rule) if self.comment else rule


@dataclass(frozen=True)
class Alert:
    """An alerting rule; ``description`` is given line by line (folded in the file)."""

    name: str
    expr: str
    labels: dict[str, str]
    summary: str
    description: tuple[str, ...]
    for_: str | None = None
    comment: tuple[str, ...] = ()

    def document(self) -> object:
        rule: dict[str, object] = {"alert": self.name, "expr": _expr(self.expr)}
        if self.for_ is not None:
            rule["for"] = self.for_
        rule["labels"] = dict(self.labels)
        rule["annotations"] = {"summary": self.summary, "description": Folded(self.description)}
        return Commented(self.comment, rule) if self.comment else rule


Rule = Record | Alert


def _expr(expr: str) -> object:
    return Literal(expr) if "\n" in expr else expr


def base_rules(names: Names) -> list[Rule]:
    """Request rate, error ratio, latency quantiles, in-flight, exceptions, and the four
    alerts on them; every ``route:*`` series is summed by (job, route)."""
    route, status, job_route = names.route, names.status, f"job, {names.route}"
    requests = f"route:{names.requests_stem}:rate5m"
    errors = f"route:{names.stem}_errors:rate5m"
    error_ratio = f"route:{names.stem}_errors:ratio_rate5m"
    buckets = f"route:{names.bucket}:rate5m"
    p99 = f"route:{names.duration}:p99_5m"
    in_flight = f"instance:{names.in_flight}:sum"

    by_route = ("job", route)

    def requests_rate(matchers: tuple[str, ...] = (), by: tuple[str, ...] = by_route) -> str:
        return sli.series_rate(names, names.requests, matchers, "5m", by)

    def quantile(q: str) -> Record:
        expr = f"histogram_quantile({q}, {buckets})"
        if names.native:
            native = sli.rate(names.duration, (), "5m", by_route)
            expr = f"{expr}\n  or\nhistogram_quantile({q}, {native})\n"
        return Record(f"route:{names.duration}:p{q[2:]}_5m", expr)

    return [
        Record(
            requests,
            requests_rate(),
            comment=("--- traffic -------------------------------------------------------",),
        ),
        Record(
            f"route:{names.requests_stem}_by_status:rate5m",
            requests_rate(by=(*by_route, status)),
        ),
        Record(
            errors,
            requests_rate((f'{status}=~"5.."',)),
            comment=("--- errors (5xx only; 499 and 4xx are not server errors) ------------",),
        ),
        Record(
            error_ratio,
            f"({errors} or {requests} * 0)\n  /\n{requests}\n",
            comment=(
                '"or ... * 0" makes the ratio 0 (instead of absent) for routes that',
                "never returned a 5xx, so dashboards and alerts see an explicit 0.",
            ),
        ),
        Record(
            buckets,
            f"sum by ({job_route}, le) (rate({names.bucket}[5m]))",
            comment=("--- latency ---------------------------------------------------------",),
        ),
        quantile("0.50"),
        quantile("0.95"),
        quantile("0.99"),
        Record(
            f"route:{names.duration}:mean_5m",
            f"{sli.series_rate(names, names.sum, (), '5m', by_route)}\n  /\n"
            f"{sli.series_rate(names, names.count, (), '5m', by_route)}\n",
        ),
        Record(
            in_flight,
            f"sum by (job, instance) ({names.in_flight})",
            comment=("--- saturation --------------------------------------------------------",),
        ),
        Record(
            f"route:{names.exceptions_stem}:rate5m",
            f"sum by ({job_route}, {names.exception_type}) (rate({names.exceptions}[5m]))",
            comment=("--- exceptions --------------------------------------------------------",),
        ),
        Alert(
            "HTTPRequestErrorRatioHigh",
            f"{error_ratio} > 0.05\n  and on ({job_route})\n{requests} >= 0.1\n",
            {"severity": "critical"},
            f"High 5xx ratio on {{{{ $labels.job }}}} {{{{ $labels.{route} }}}}",
            (
                f"{{{{ $value | humanizePercentage }}}} of requests to route"
                f" {{{{ $labels.{route} }}}}",
                "of job {{ $labels.job }} failed with a 5xx status over the last 5 minutes",
                "(threshold 5%, 499 client disconnects excluded).",
            ),
            for_="5m",
            comment=(
                "--- alerts --------------------------------------------------------------",
                "The alerts live in the same group as the recording rules they use:",
                "rules of one group are evaluated in order, so an alert always sees the",
                "recorded series of the same evaluation (groups run independently).",
                "",
                "Fires when more than 5% of a route's requests failed with 5xx for 5",
                "minutes. Minimum-traffic guard: the route must serve at least 0.1 req/s",
                "(about 30 requests per 5 minutes), so one failed request on an idle",
                "route does not page anybody.",
            ),
        ),
        Alert(
            "HTTPRequestLatencyP99High",
            f"{p99} > 1\n  and on ({job_route})\n{requests} >= 0.1\n",
            {"severity": "warning"},
            f"High p99 latency on {{{{ $labels.job }}}} {{{{ $labels.{route} }}}}",
            (
                f"The 99th percentile latency of route {{{{ $labels.{route} }}}} of job",
                "{{ $labels.job }} is {{ $value | humanizeDuration }} (threshold 1s)",
                "over the last 5 minutes.",
            ),
            for_="10m",
            comment=(
                "p99 latency above 1 second for 10 minutes, with the same traffic guard",
                "(a quantile over a handful of requests is noise).",
            ),
        ),
        Alert(
            "HTTPRequestsInFlightSaturated",
            f"{in_flight} > 100",
            {"severity": "warning"},
            "Instance {{ $labels.instance }} of {{ $labels.job }} is saturated",
            (
                "{{ $labels.instance }} (job {{ $labels.job }}) has had",
                "{{ $value | humanize }} requests in flight for 5 minutes (threshold 100).",
            ),
            for_="5m",
            comment=(
                "More than 100 requests concurrently in progress on one instance for 5",
                "minutes: the worker pool / event loop is saturated or requests hang.",
            ),
        ),
        Alert(
            "HTTPTargetDown",
            "up == 0",
            {"severity": "critical"},
            "Target {{ $labels.instance }} of {{ $labels.job }} is down",
            (
                "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }})",
                "for more than 2 minutes.",
            ),
            for_="2m",
            comment=("Prometheus cannot scrape the target at all.",),
        ),
    ]


def ratio_name(names: Names, window: str) -> str:
    """The recorded share of bad requests of an objective over ``window``
    (``slo:http_request_errors:ratio_rate5m``); which objective: the ``slo`` and
    ``route`` labels. For a latency objective a bad request is one slower than the
    threshold."""
    return f"slo:{names.stem}_errors:ratio_rate{window}"


def objective_labels(objective: Objective) -> dict[str, str]:
    """The labels of an objective's recorded series and alerts."""
    labels = {"slo": objective.slo}
    if objective.route is not None:
        labels["route"] = objective.route
    return labels


def objective_matchers(objective: Objective) -> list[str]:
    """Selects an objective's recorded series; ``route=""`` keeps the objective over all
    routes apart from the per-route objectives of the same ``slo``."""
    return [
        promql.equal("slo", objective.slo),
        promql.equal("route", objective.route or ""),
    ]


def objective_records(names: Names, objective: Objective) -> list[Record]:
    """The bad-request ratio of ``objective`` over every window the alerts read."""
    records = []
    for number, window in enumerate(burn.windows()):
        comment: tuple[str, ...] = ()
        if number == 0:
            comment = (f"--- objective: {objective.describe()} ---",)
        expr = sli.bad_ratio(names, objective, window).promql(multiline=True)
        records.append(
            Record(ratio_name(names, window), expr, objective_labels(objective), comment)
        )
    return records


def burn_alert(names: Names, objective: Objective, alert: burn.BurnAlert) -> Alert:
    """The alert of ``objective`` for one severity of the burn-rate policy."""
    selector = objective_matchers(objective)
    conditions = []
    for condition in alert.conditions:
        threshold = promql.number(condition.factor * objective.budget)
        long, short = (
            promql.selector(ratio_name(names, window), selector)
            for window in (condition.long, condition.short)
        )
        conditions.append(f"(\n  {long} > {threshold}\n    and\n  {short} > {threshold}\n)")
    rates = ", or ".join(
        f"{promql.number(c.factor)}x over {c.long} and {c.short}" for c in alert.conditions
    )
    scope = "" if objective.route is None else f" on {objective.route}"
    description = (
        f"Objective: {objective.describe()}, over {burn.PERIOD}. Job {{{{ $labels.job }}}}"
        f" spends its error budget faster than the sustainable rate: {rates}."
        f" {alert.action}."
    )
    return Alert(
        alert.name,
        "\nor\n".join(conditions) + "\n",
        {"severity": alert.severity, **objective_labels(objective)},
        f"{{{{ $labels.job }}}} burns its {objective.slo} error budget{scope}",
        tuple(textwrap.wrap(description, 80, break_long_words=False, break_on_hyphens=False)),
    )


def slo_rules(names: Names, objectives: Sequence[Objective]) -> list[Rule]:
    """Every objective's recorded ratios, then its page and ticket alerts."""
    rules: list[Rule] = []
    for objective in objectives:
        rules.extend(objective_records(names, objective))
        rules.extend(burn_alert(names, objective, alert) for alert in burn.POLICY)
    return rules


def _header(names: Names, objectives: Sequence[Objective]) -> list[str]:
    settings = names.settings
    options = f"{settings.naming} naming preset"
    if settings.namespace:
        options += f", namespace {settings.namespace}"
    header = [
        "Recording and alerting rules for the HTTP request metrics exported by",
        f"asgi_metrics / wsgi_metrics ({options}).",
        "Generated by `http-metrics rules`: regenerate it with your options rather than",
        "edit it (docs/dashboards.md).",
        "",
        "Naming follows the Prometheus convention level:metric:operations. Every",
        f'"route:*" series is aggregated by (job, {names.route}); "instance:*" by (job, instance).',
        "",
        "Error ratio = share of 5xx responses among all responses. 499 (client closed",
        "the connection) is NOT an error: it is counted as traffic but never as a failure.",
        "",
        "Thresholds below are examples; tune them per service.",
    ]
    if objectives:
        header += [
            "",
            f'Objectives ("slo:*" series, summed by job, and the {burn.FAST.name} /',
            f"{burn.SLOW.name} alerts, multi-window multi-burn-rate as in the Google",
            f"SRE workbook, over {burn.PERIOD}):",
            *(f"  {objective.slo}: {objective.describe()}" for objective in objectives),
        ]
    return header


def rules_file(names: Names, objectives: Sequence[Objective] = ()) -> str:
    """The rules file (YAML text) for these names and objectives."""
    groups: list[object] = [
        {"name": BASE_GROUP, "rules": Spaced(r.document() for r in base_rules(names))}
    ]
    if objectives:
        groups.append(
            Commented(
                (
                    "",
                    "The objectives' ratios and the alerts reading them, in one group for",
                    "the same reason: each alert sees the ratios of the same evaluation.",
                ),
                {
                    "name": SLO_GROUP,
                    "rules": Spaced(r.document() for r in slo_rules(names, objectives)),
                },
            )
        )
    return dump({"groups": groups}, header=_header(names, objectives))

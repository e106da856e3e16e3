"""``promtool test rules`` files for the objectives: input series that burn an objective's
error budget at a chosen rate, and the alerts that must (or must not) fire.

For each objective: a burn just above 14.4x pages within the short window (5 minutes) and
stops paging once the burn has stopped for the longest short window of the page (30
minutes); a 1x burn never pages (499s, at 15 times the budget, are traffic, not errors); a
burn just above 3x opens a ticket without paging.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal

from asgi_metrics.core.labels import CLIENT_CLOSED_STATUS
from asgi_metrics.slo import burn, promql, rules
from asgi_metrics.slo.names import Names
from asgi_metrics.slo.objectives import Objective
from asgi_metrics.slo.yaml_out import Commented, Spaced, dump

#: Requests per minute in every scenario: large enough that one request more than the
#: exact burn rate moves it by a hair (14.401x for 99.9%), never by float noise.
REQUESTS_PER_MINUTE = 1_000_000
#: The scenarios last this long, one sample per minute.
MINUTES = 100
JOB = "api"
_INSTANCE = "a:8000"
_PAGE_BURN_MINUTES = 60


def _counter(per_minute: int, after: int | None = None, until: int | None = None) -> str:
    """promtool's series notation for a counter growing by ``per_minute`` every minute,
    then from minute ``until`` on by ``after``."""
    if until is None or after is None:
        return f"0+{per_minute}x{MINUTES}"
    # "a+bxn" is the n + 1 values a, a + b, ..., a + n * b.
    switch = per_minute * until
    return f"0+{per_minute}x{until} {switch + after}+{after}x{MINUTES - until - 1}"


def _bad_per_minute(objective: Objective, factor: Decimal, *, above: bool) -> int:
    exact = factor * objective.budget * REQUESTS_PER_MINUTE
    return int(exact) + 1 if above else int(exact)


def _scenario_route(objective: Objective, routes: Sequence[str]) -> str:
    """The route the scenario's traffic goes to: the objective's own, or for an objective
    over all requests one that no per-route objective watches."""
    if objective.route is not None:
        return objective.route
    route = "/slo-test"
    while route in routes:
        route += "-"
    return route


def _series(
    names: Names,
    objective: Objective,
    route: str,
    bad: int,
    *,
    until: int | None = None,
    client_closed: int = 0,
) -> list[dict[str, str]]:
    """Input series: ``REQUESTS_PER_MINUTE`` requests a minute on ``route``, ``bad`` of
    them bad (5xx, or slower than the threshold) until minute ``until`` (to the end when
    ``None``), then all good; ``client_closed`` of them answered 499 (availability)."""

    def series(metric: str, status: str, values: str, le: str | None = None) -> dict[str, str]:
        labels = [
            promql.equal("job", JOB),
            promql.equal("instance", _INSTANCE),
            promql.equal(names.method, "GET"),
            promql.equal(names.route, route),
            promql.equal(names.status, status),
        ]
        if le is not None:
            labels.append(promql.equal("le", le))
        return {"series": promql.selector(metric, labels), "values": values}

    total = REQUESTS_PER_MINUTE
    if objective.threshold is None:
        served = total - client_closed
        found = [
            series(names.requests, "200", _counter(served - bad, served, until)),
            series(names.requests, "500", _counter(bad, 0, until)),
        ]
        if client_closed:
            found.append(
                series(names.requests, str(CLIENT_CLOSED_STATUS), _counter(client_closed))
            )
        return found
    le = names.le(objective.threshold)
    return [
        series(names.bucket, "200", _counter(total - bad, total, until), le),
        series(names.bucket, "200", _counter(total), "+Inf"),
        series(names.count, "200", _counter(total)),
    ]


def _expected(
    names: Names, objectives: Sequence[Objective], subject: Objective, alert: burn.BurnAlert
) -> list[dict[str, object]]:
    """The alerts ``alert`` raises when ``subject``'s traffic burns: the subject's, and
    the objective of the same ``slo`` over all requests, which sees the same traffic."""
    seeing = [
        o for o in objectives
        if o.slo == subject.slo and o.route in (None, subject.route)
    ]
    found: list[dict[str, object]] = []
    for objective in seeing:
        rule = rules.burn_alert(names, objective, alert)
        annotations = {
            "summary": rule.summary.replace("{{ $labels.job }}", JOB),
            "description": " ".join(rule.description).replace("{{ $labels.job }}", JOB),
        }
        # Only {{ $labels.job }} is templated, so the expected texts are exact.
        assert all("{{" not in text for text in annotations.values()), annotations
        found.append(
            {"exp_labels": {**rule.labels, "job": JOB}, "exp_annotations": annotations}
        )
    return found


def _minutes(value: int) -> str:
    return f"{value}m"


def objective_tests(
    names: Names, objectives: Sequence[Objective], subject: Objective
) -> list[object]:
    """The three scenarios for one objective."""
    routes = [o.route for o in objectives if o.route is not None]
    route = _scenario_route(subject, routes)
    where = "all requests" if subject.route is None else subject.route
    fast, slow = burn.FAST, burn.SLOW
    page_factor = fast.conditions[0].factor
    ticket_factor = slow.conditions[0].factor
    # The page stops once every short window of the page holds only good requests.
    quiet_after = _PAGE_BURN_MINUTES + max(burn.seconds(c.short) for c in fast.conditions) // 60
    page_bad = _bad_per_minute(subject, page_factor, above=True)
    one_x_bad = _bad_per_minute(subject, Decimal(1), above=False)
    # 499s at 15x the budget would page if they counted as errors (16x > 14.4x), where
    # the budget leaves room for them.
    client_closed = 0
    if subject.threshold is None and 16 * subject.budget <= Decimal("0.5"):
        client_closed = math.ceil(15 * subject.budget * REQUESTS_PER_MINUTE)
    name = f"{subject.slo} ({where})"
    return [
        Commented(
            (f"--- {subject.describe()} " + "-" * 10,),
            {
                "name": f"{name}: a {page_factor}x burn pages within {fast.conditions[0].short}",
                "interval": "1m",
                "input_series": _series(
                    names, subject, route, page_bad, until=_PAGE_BURN_MINUTES
                ),
                "alert_rule_test": [
                    {
                        "alertname": fast.name,
                        "eval_time": fast.conditions[0].short,
                        "exp_alerts": _expected(names, objectives, subject, fast),
                    },
                    {
                        "alertname": fast.name,
                        "eval_time": _minutes(_PAGE_BURN_MINUTES),
                        "exp_alerts": _expected(names, objectives, subject, fast),
                    },
                    {
                        "alertname": fast.name,
                        "eval_time": _minutes(quiet_after + 2),
                        "exp_alerts": [],
                    },
                ],
            },
        ),
        {
            "name": f"{name}: a 1x burn does not page",
            "interval": "1m",
            "input_series": _series(
                names, subject, route, one_x_bad, client_closed=client_closed
            ),
            "alert_rule_test": [
                {"alertname": fast.name, "eval_time": _minutes(m), "exp_alerts": []}
                for m in (5, 60, MINUTES)
            ],
        },
        {
            "name": f"{name}: a {ticket_factor}x burn opens a ticket, no page",
            "interval": "1m",
            "input_series": _series(
                names, subject, route, _bad_per_minute(subject, ticket_factor, above=True)
            ),
            "alert_rule_test": [
                {
                    "alertname": slow.name,
                    "eval_time": "10m",
                    "exp_alerts": _expected(names, objectives, subject, slow),
                },
                {"alertname": fast.name, "eval_time": "10m", "exp_alerts": []},
                {"alertname": fast.name, "eval_time": _minutes(MINUTES), "exp_alerts": []},
            ],
        },
    ]


def rule_tests_file(
    names: Names, objectives: Sequence[Objective], rules_file: str = "rules.yml"
) -> str:
    """The ``promtool test rules`` file for the rules file ``rules_file`` (a path relative
    to the test file) generated with the same options."""
    tests: list[object] = []
    for objective in objectives:
        tests.extend(objective_tests(names, objectives, objective))
    header = [
        f"Unit tests of the objectives in {rules_file}: promtool test rules <this file>",
        "Generated by `http-metrics rules-test` with the options of the rules file.",
        "",
        f"Every scenario: {REQUESTS_PER_MINUTE} requests a minute on one route of job {JOB},",
        "a share of them bad (5xx, or slower than the threshold).",
    ]
    return dump(
        {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": Spaced(tests)},
        header=header,
    )

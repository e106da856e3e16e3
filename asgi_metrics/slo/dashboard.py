"""The Grafana dashboard for one configuration: request rate, error ratio, latency
quantiles, in-flight and exceptions, and with objectives an SLO row (error budget left,
burn rates). ``example_apps/monitoring/grafana-dashboard.json`` is this module's output
for the defaults.

Every panel reads the middleware's own series except the burn rates, which read the
``slo:*`` ratios recorded by the rules generated with the same options.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from asgi_metrics.core.labels import OTHER_METHOD, UNMATCHED_ROUTE
from asgi_metrics.slo import burn, promql, rules, sli
from asgi_metrics.slo.names import Names
from asgi_metrics.slo.objectives import Objective

Panel = dict[str, Any]

_DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
_WIDTH = 24
_RATE = "$__rate_interval"
_LEGEND = {
    "displayMode": "table",
    "placement": "bottom",
    "showLegend": True,
    "calcs": ["mean", "max", "lastNotNull"],
}
_LINES = {
    "drawStyle": "line",
    "lineWidth": 1,
    "fillOpacity": 10,
    "showPoints": "never",
    "spanNulls": False,
}


def _target(
    ref: str, expr: str, legend: str, *, instant: bool = False, table: bool = False
) -> dict[str, Any]:
    """A query; ``instant`` (implied by ``table``) for values over a long fixed window,
    which a range query would compute again at every step."""
    instant = instant or table
    target: dict[str, Any] = {
        "datasource": dict(_DATASOURCE),
        "refId": ref,
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "editorMode": "code",
    }
    if table:
        target["format"] = "table"
    return target


def _thresholds(*steps: tuple[str, float]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}]
        + [{"color": color, "value": value} for color, value in steps],
    }


def _stat(
    title: str,
    description: str,
    size: tuple[int, int],
    unit: str,
    target: dict[str, Any],
    thresholds: dict[str, Any] | None = None,
    *,
    graph: bool = True,
) -> Panel:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds is not None:
        defaults["thresholds"] = thresholds
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "size": size,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "textMode": "auto",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "targets": [target],
    }


def _timeseries(
    title: str,
    description: str,
    size: tuple[int, int],
    unit: str,
    targets: Sequence[dict[str, Any]],
    **defaults: Any,
) -> Panel:
    field_defaults: dict[str, Any] = {"unit": unit, "custom": dict(_LINES)}
    thresholds = defaults.pop("thresholds", None)
    if thresholds is not None:
        field_defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
        field_defaults["thresholds"] = thresholds
    field_defaults.update(defaults)
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "size": size,
        "fieldConfig": {"defaults": field_defaults, "overrides": []},
        "options": {"legend": dict(_LEGEND), "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": list(targets),
    }


def _row(title: str) -> Panel:
    return {"type": "row", "title": title, "collapsed": False, "size": (_WIDTH, 1)}


def _layout(panels: Sequence[Panel]) -> list[Panel]:
    """Ids in order, and grid positions: rows across the whole width, the other panels
    left to right, wrapping onto a new line below the tallest panel of the line."""
    placed: list[Panel] = []
    x = y = line_height = 0
    for number, panel in enumerate(panels, 1):
        width, height = panel["size"]
        if panel["type"] == "row" or x + width > _WIDTH:
            x, y, line_height = 0, y + line_height, 0
        out: Panel = {"id": number, "type": panel["type"], "title": panel["title"]}
        if panel["type"] == "row":
            out.update(collapsed=panel["collapsed"], gridPos=_grid(0, y, width, height))
            out["panels"] = []
            x, y = 0, y + height
        else:
            out["description"] = panel["description"]
            out["datasource"] = dict(_DATASOURCE)
            out["gridPos"] = _grid(x, y, width, height)
            out.update((k, v) for k, v in panel.items() if k not in out and k != "size")
            x, line_height = x + width, max(line_height, height)
        placed.append(out)
    return placed


def _grid(x: int, y: int, w: int, h: int) -> dict[str, int]:
    return {"x": x, "y": y, "w": w, "h": h}


def _overview(names: Names) -> list[Panel]:
    scope = ['job=~"$job"', f'{names.route}=~"$route"']
    by_route = ("job", names.route)
    requests = sli.series_rate(names, names.requests, scope, _RATE, ())
    errors = sli.series_rate(
        names, names.requests, [*scope, f'{names.status}=~"5.."'], _RATE, ()
    )
    route_label = "{{job}} {{" + names.route + "}}"

    def quantile(q: str, by: Sequence[str]) -> str:
        return sli.quantile(names, q, scope, _RATE, [label for label in by if label != "le"])

    return [
        _row("Overview"),
        _stat(
            "Request rate",
            "Requests per second over the selected jobs and routes.",
            (6, 4),
            "reqps",
            _target("A", requests, "req/s"),
        ),
        _stat(
            "Error ratio (5xx)",
            "Share of responses with a 5xx status. 499 (client closed request) and 4xx"
            " are not errors.",
            (6, 4),
            "percentunit",
            _target("A", f"({errors} or vector(0)) / {requests}", "5xx"),
            _thresholds(("orange", 0.01), ("red", 0.05)),
        ),
        _stat(
            "p99 latency",
            "99th percentile request duration over the selected jobs and routes.",
            (6, 4),
            "s",
            _target("A", quantile("0.99", ("le",)), "p99"),
            _thresholds(("orange", 0.5), ("red", 1)),
        ),
        _stat(
            "Requests in flight",
            "Requests currently in progress (all instances of the selected jobs).",
            (6, 4),
            "short",
            _target("A", f'sum({names.in_flight}{{job=~"$job"}})', "in flight"),
        ),
        _row("Traffic and errors"),
        _timeseries(
            "Request rate by route",
            f"sum by (job, {names.route}) (rate({names.requests})). Unmatched paths are"
            f' grouped under {names.route}="{UNMATCHED_ROUTE}".',
            (12, 8),
            "reqps",
            [_target("A", sli.series_rate(names, names.requests, scope, _RATE, by_route),
                     route_label)],
        ),
        _timeseries(
            "Error ratio by route (5xx)",
            "Share of 5xx responses per route (0 for routes without errors). 499 and 4xx"
            " are not counted as errors.",
            (12, 8),
            "percentunit",
            [
                _target(
                    "A",
                    sli.error_ratio(names, _RATE, matchers=scope, by=by_route).promql(
                        multiline=False
                    ),
                    route_label,
                )
            ],
            min=0,
            max=1,
        ),
        _timeseries(
            "Responses by status",
            "Response rate per HTTP status code.",
            (12, 8),
            "reqps",
            [
                _target(
                    "A",
                    sli.series_rate(names, names.requests, scope, _RATE, (names.status,)),
                    "{{" + names.status + "}}",
                )
            ],
        ),
        _timeseries(
            "Request rate by method",
            f"Request rate per HTTP method (non-standard methods are reported as"
            f" {OTHER_METHOD}).",
            (12, 8),
            "reqps",
            [
                _target(
                    "A",
                    sli.series_rate(names, names.requests, scope, _RATE, (names.method,)),
                    "{{" + names.method + "}}",
                )
            ],
        ),
        _row("Latency"),
        _timeseries(
            "Latency p50 / p95 / p99 by route",
            f"histogram_quantile over rate({names.bucket}). Quantiles are interpolated"
            " within bucket boundaries.",
            (24, 9),
            "s",
            [
                _target(ref, quantile(q, (*by_route, "le")), f"p{label} {route_label}")
                for ref, q, label in (("A", "0.5", "50"), ("B", "0.95", "95"), ("C", "0.99", "99"))
            ],
        ),
        _timeseries(
            "Mean latency by route",
            "Average request duration per route.",
            (24, 8),
            "s",
            [
                _target(
                    "A",
                    f"{sli.series_rate(names, names.sum, scope, _RATE, by_route)}"
                    f" / {sli.series_rate(names, names.count, scope, _RATE, by_route)}",
                    route_label,
                )
            ],
        ),
        _row("Saturation and exceptions"),
        _timeseries(
            "Requests in flight by instance",
            "Concurrent requests in progress per instance (alert threshold: 100 for 5m).",
            (12, 8),
            "short",
            [
                _target(
                    "A",
                    f'sum by (job, instance) ({names.in_flight}{{job=~"$job"}})',
                    "{{job}} {{instance}}",
                )
            ],
        ),
        _timeseries(
            "Exception rate by type",
            "Unhandled exceptions per second, by exception type and route.",
            (12, 8),
            "reqps",
            [
                _target(
                    "A",
                    sli.rate(names.exceptions, scope, _RATE, (*by_route, names.exception_type)),
                    "{{" + names.exception_type + "}} {{" + names.route + "}}",
                )
            ],
        ),
        {
            **_stat(
                "Top exceptions",
                "The 10 most frequent unhandled exceptions over the dashboard time range.",
                (24, 8),
                "short",
                _target(
                    "A",
                    f"topk(10, sum by (job, {names.route}, {names.exception_type})"
                    f" (increase({promql.selector(names.exceptions, scope)}[$__range])))",
                    "",
                    table=True,
                ),
            ),
            "type": "table",
            "options": {
                "showHeader": True,
                "sortBy": [{"displayName": "exceptions", "desc": True}],
            },
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value": "exceptions"},
                    },
                }
            ],
        },
    ]


def _objective_panels(names: Names, objective: Objective) -> list[Panel]:
    where = "all routes" if objective.route is None else objective.route
    budget = promql.number(objective.budget)
    period_ratio = sli.bad_ratio(names, objective, burn.PERIOD, matchers=['job=~"$job"'])
    long_windows = [c.long for alert in burn.POLICY for c in alert.conditions]
    matchers = ['job=~"$job"', *rules.objective_matchers(objective)]
    factors = sorted({c.factor for alert in burn.POLICY for c in alert.conditions})
    colors = ("yellow", "orange", "red", "dark-red")
    return [
        _stat(
            f"Error budget left: {objective.slo} ({where})",
            f"Objective: {objective.describe()}. Share of the error budget ({budget} of the"
            f" requests) not yet spent over the last {burn.PERIOD}; below 0 the objective"
            " is missed.",
            (6, 7),
            "percentunit",
            _target(
                "A",
                f"1 - ({period_ratio.promql(multiline=False)}) / {budget}",
                "{{job}}",
                instant=True,
            ),
            {
                "mode": "absolute",
                "steps": [
                    {"color": "red", "value": None},
                    {"color": "orange", "value": 0},
                    {"color": "green", "value": 0.25},
                ],
            },
            graph=False,
        ),
        _timeseries(
            f"Burn rate: {objective.slo} ({where})",
            "How fast the error budget is spent (1 spends it exactly in"
            f" {burn.PERIOD}) over the long window of each alert condition: "
            + ", ".join(
                f"{alert.severity} above {promql.number(c.factor)} over {c.long}"
                for alert in burn.POLICY
                for c in alert.conditions
            )
            + f" (and over its short window). From {rules.ratio_name(names, '<window>')},"
            " recorded by the rules of `http-metrics rules` run with the same options.",
            (18, 7),
            "x",
            [
                _target(
                    chr(ord("A") + number),
                    f"{promql.selector(rules.ratio_name(names, window), matchers)} / {budget}",
                    f"{window} {{{{job}}}}",
                )
                for number, window in enumerate(long_windows)
            ],
            min=0,
            thresholds=_thresholds(
                *((color, float(f)) for color, f in zip(colors, factors, strict=False))
            ),
        ),
    ]


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": dict(_DATASOURCE),
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "hide": 0,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
    }


def _identity(names: Names) -> tuple[str, str]:
    """Title and uid: the defaults', with the preset and namespace added otherwise, so
    dashboards of several configurations live side by side (a uid is 40 characters at
    most)."""
    settings = names.settings
    extra = [part for part in (settings.namespace, settings.naming) if part not in ("", "default")]
    if not extra:
        return "HTTP request metrics", "http-request-metrics"
    uid = "http-request-metrics-" + "-".join(extra)
    if len(uid) > 40:
        uid = "http-request-metrics-" + hashlib.sha256(uid.encode()).hexdigest()[:19]
    return f"HTTP request metrics ({', '.join(extra)})", uid


def dashboard(names: Names, objectives: Sequence[Objective] = ()) -> dict[str, Any]:
    """The dashboard as a JSON-ready dict."""
    panels: list[Panel] = []
    if objectives:
        panels.append(_row("Service level objectives"))
        for objective in objectives:
            panels.extend(_objective_panels(names, objective))
    panels.extend(_overview(names))
    title, uid = _identity(names)
    requests = names.requests
    requests_in_job = f'{names.requests}{{job=~"$job"}}'
    if names.native and names.requests == names.count:
        # A preset counting requests with the histogram's _count: where Prometheus keeps
        # only the native form, the series to list is the histogram itself.
        requests = f'{{__name__=~"{names.count}|{names.duration}"}}'
        requests_in_job = f'{{__name__=~"{names.count}|{names.duration}", job=~"$job"}}'

    description = (
        "HTTP request metrics from asgi_metrics / wsgi_metrics: traffic, 5xx ratio, latency"
        " quantiles, in-flight requests and exceptions per route."
    )
    if objectives:
        description += " Objectives: " + "; ".join(o.describe() for o in objectives) + "."
    requires = [
        ("grafana", "grafana", "Grafana", "10.0.0"),
        ("datasource", "prometheus", "Prometheus", "1.0.0"),
        ("panel", "timeseries", "Time series", ""),
        ("panel", "stat", "Stat", ""),
        ("panel", "table", "Table", ""),
    ]
    return {
        "__requires": [
            {"type": kind, "id": ident, "name": name, "version": version}
            for kind, ident, name, version in requires
        ],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "liveNow": False,
        "panels": _layout(panels),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["http", "prometheus", "asgi_metrics", "wsgi_metrics"],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "regex": "",
                    "current": {},
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                    "options": [],
                    "refresh": 1,
                },
                _variable("job", "Job", f"label_values({requests}, job)"),
                _variable(
                    "route",
                    "Route",
                    f"label_values({requests_in_job}, {names.route})",
                ),
            ]
        },
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


def dashboard_json(names: Names, objectives: Sequence[Objective] = ()) -> str:
    """The dashboard as the JSON text of an importable file."""
    return json.dumps(dashboard(names, objectives), indent=2) + "\n"


"""``http-metrics``: generate the Prometheus rules, their ``promtool`` unit tests and the
Grafana dashboard for your configuration and objectives.

    http-metrics rules --availability 99.9 --latency 0.25:99 -o http-rules.yml
    http-metrics rules-test --availability 99.9 --latency 0.25:99 \\
        --rules-file http-rules.yml -o http-rules_test.yml
    http-metrics dashboard --availability 99.9 --latency 0.25:99 -o http-dashboard.json

Give every command the same options, and the ones the middleware runs with
(``--namespace``, ``--naming``, ``--buckets``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from asgi_metrics.core import checks
from asgi_metrics.core.checks import ConfigurationError
from asgi_metrics.core.settings import DEFAULT_BUCKETS
from asgi_metrics.slo import objectives
from asgi_metrics.slo.dashboard import dashboard_json
from asgi_metrics.slo.names import Names, names_for
from asgi_metrics.slo.objectives import Objective
from asgi_metrics.slo.rule_tests import rule_tests_file
from asgi_metrics.slo.rules import rules_file

_COMMANDS = {
    "rules": "the Prometheus rules file: recording rules, alerts, and per objective its "
    "error ratios and multi-window burn-rate alerts",
    "rules-test": "a `promtool test rules` file proving each objective's alerts: a 14.4x "
    "burn pages, a 1x burn does not, a 3x burn opens a ticket",
    "dashboard": "the Grafana dashboard JSON, with an SLO row when objectives are given",
}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The command line, and its parser per command (to report errors with its usage)."""
    common = argparse.ArgumentParser(add_help=False)
    metrics = common.add_argument_group("the middleware's settings (use the same values)")
    metrics.add_argument("--namespace", default="", help="metric name prefix (default: none)")
    metrics.add_argument(
        "--naming", default="default", choices=["default", "otel"], help="naming preset"
    )
    metrics.add_argument(
        "--buckets",
        metavar="S,S,...",
        help="duration bucket bounds in seconds, comma-separated"
        f" (default: {','.join(f'{b:g}' for b in DEFAULT_BUCKETS)})",
    )
    metrics.add_argument(
        "--native",
        action="store_true",
        help="the middleware records native histograms (native_histograms): read the"
        " duration histogram in whichever form Prometheus keeps (classic, native or"
        " both), and allow any --latency threshold",
    )
    slo = common.add_argument_group("objectives (over 30 days)")
    slo.add_argument(
        "--availability",
        metavar="PERCENT",
        help="share of requests without a 5xx response, e.g. 99.9 (499 is not an error)",
    )
    slo.add_argument(
        "--latency",
        metavar="SECONDS:PERCENT",
        action="append",
        default=[],
        help="share of requests served within SECONDS, e.g. 0.25:99; SECONDS must be a"
        " bucket bound unless --native; repeatable",
    )
    slo.add_argument(
        "--route",
        metavar="TEMPLATE",
        action="append",
        default=[],
        help="also apply every objective to this route template alone, e.g. /users/{id};"
        " repeatable",
    )
    common.add_argument("-o", "--output", metavar="FILE", help="write here, not to stdout")

    parser = argparse.ArgumentParser(
        prog="http-metrics",
        description="Prometheus rules, their promtool tests and a Grafana dashboard for the"
        " metrics of asgi_metrics / wsgi_metrics, for your settings and objectives.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    by_name = {}
    for name, help_text in _COMMANDS.items():
        command = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        by_name[name] = command
        if name == "rules-test":
            command.add_argument(
                "--rules-file",
                metavar="PATH",
                default="rules.yml",
                help="the rules file under test, relative to the test file (default: rules.yml)",
            )
    return parser, by_name


def _configuration(args: argparse.Namespace) -> tuple[Names, list[Objective]]:
    buckets = DEFAULT_BUCKETS
    if args.buckets is not None:
        try:
            buckets = tuple(checks.env_numbers(args.buckets))
        except ConfigurationError as exc:
            raise ConfigurationError(f"--buckets: {exc}") from None
    # A bad namespace or bucket list is reported as the middleware's setting it mirrors.
    names = names_for(args.namespace, args.naming, buckets, native=args.native)
    availability = None
    if args.availability is not None:
        availability = objectives.availability(args.availability)
    latencies = [objectives.latency(text, names) for text in args.latency]
    return names, objectives.expand(availability, latencies, args.route)


def _render(args: argparse.Namespace, names: Names, found: list[Objective]) -> str:
    if args.command == "rules":
        return rules_file(names, found)
    if args.command == "dashboard":
        return dashboard_json(names, found)
    if not found:
        raise ConfigurationError("rules-test needs an objective (--availability or --latency)")
    native_only = [o for o in found if o.threshold is not None and o.threshold not in names.buckets]
    if native_only:
        # promtool 2.42 reads no native histogram in input series ("{{schema:...}}" came
        # later): such an objective is proven against a real Prometheus instead.
        raise ConfigurationError(
            f"rules-test: --latency {native_only[0].threshold:g}s is not a bucket bound;"
            " promtool's input series can only be classic buckets, so no test file can"
            " be generated for it"
        )
    return rule_tests_file(names, found, args.rules_file)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a bad option)."""
    parser, commands = _parser()
    args = parser.parse_args(argv)
    try:
        names, found = _configuration(args)
        text = _render(args, names, found)
    except ConfigurationError as exc:
        commands[args.command].error(str(exc))  # exits with status 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0

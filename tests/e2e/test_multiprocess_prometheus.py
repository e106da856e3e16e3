"""End to end with a real Prometheus: several instances of the test apps (a multi-worker
gunicorn, ``uvicorn --workers``, a single-process uvicorn) on loopback, scraped every
second; known traffic; then the numbers as Prometheus' query API sees them, and every
dashboard expression of ``example_apps/monitoring`` returning data.

Bounded in time (every wait has a deadline); everything started is stopped."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import ROOT
from tests.support.prometheus_server import PrometheusServer
from tests.support.servers import Server, gunicorn, http_get, uvicorn

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

DASHBOARD = ROOT / "example_apps" / "monitoring" / "grafana-dashboard.json"
SLEEPS_MS = (120, 150, 180, 200)  # all inside the (0.1, 0.25] bucket
FLAKY = 40  # /flaky/0 .. /flaky/39: every fourth fails
SLEEPY = 24
PIDS = 30
BOOMS = 3


def instances(tmp_path: Path) -> dict[str, tuple[list[str], str | None]]:
    gunicorn_dir = tmp_path / "gunicorn"
    uvicorn_dir = tmp_path / "uvicorn"
    gunicorn_dir.mkdir()
    uvicorn_dir.mkdir()
    return {
        "gunicorn-sync-3": (gunicorn("tests.support.apps.multiprocess_wsgi:app", "-w", "3",
                                     "-k", "sync", "--timeout", "60"), str(gunicorn_dir)),
        "uvicorn-workers-2": (uvicorn("tests.support.apps.multiprocess_asgi:app", "--workers", "2"),
                              str(uvicorn_dir)),
        "uvicorn-single": (uvicorn("tests.support.apps.multiprocess_asgi:app"), None),
    }


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[dict[str, Server], PrometheusServer]]:
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(Server(argv, multiproc_dir=directory))
            for name, (argv, directory) in instances(tmp_path).items()
        }
        targets = {name: [f"127.0.0.1:{server.port}"] for name, server in servers.items()}
        prometheus = stack.enter_context(PrometheusServer(targets, scrape_interval="1s"))
        yield servers, prometheus


def send(server: Server) -> dict[str, int]:
    """The known traffic for one instance; returns requests sent per route."""
    paths = (
        [f"/flaky/{n}" for n in range(FLAKY)]
        + [f"/sleep/{SLEEPS_MS[n % len(SLEEPS_MS)]}" for n in range(SLEEPY)]
        + ["/pid"] * PIDS + ["/boom"] * BOOMS
    )
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda path: http_get(server.url + path)[0], paths))
    assert statuses.count(500) == FLAKY // 4 + BOOMS
    return {"/flaky/{n}": FLAKY, "/sleep/{ms}": SLEEPY, "/pid": PIDS, "/boom": BOOMS}


def scalar_by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {series["metric"].get(label, ""): float(series["value"][1]) for series in result}


def test_real_prometheus_sees_the_known_traffic(
    deployment: tuple[dict[str, Server], PrometheusServer],
) -> None:
    servers, prometheus = deployment
    started = time.monotonic()
    # One warm-up request per route, scraped, so rate() sees the main traffic as an increase
    # (a series' first sample is not one).
    for server in servers.values():
        for path in ("/flaky/1", "/sleep/120", "/pid", "/flaky/0", "/boom"):
            http_get(server.url + path)
    warmup = {"/flaky/{n}": 2, "/sleep/{ms}": 1, "/pid": 1, "/boom": 1}
    prometheus.wait_for(
        lambda: prometheus.query("sum(http_requests_total)")
        and float(prometheus.query("sum(http_requests_total)")[0]["value"][1])
        == sum(warmup.values()) * len(servers),
        timeout=30, message="the warm-up requests scraped")
    with ThreadPoolExecutor(len(servers)) as pool:
        sent_per_instance = list(pool.map(send, servers.values()))
    expected: dict[str, float] = {}
    for sent in sent_per_instance:
        for route, count in sent.items():
            expected[route] = expected.get(route, 0) + count + warmup.get(route, 0)

    # 1. sum(http_requests_total) per route is what was sent, across all instances.
    def totals_match() -> dict[str, float] | None:
        found = scalar_by(prometheus.query("sum by (route) (http_requests_total)"), "route")
        return found if found == expected else None

    prometheus.wait_for(totals_match, timeout=30, message=f"totals {expected}")
    per_job = scalar_by(prometheus.query("sum by (job) (http_requests_total)"), "job")
    assert per_job == {name: sum(expected.values()) / len(servers) for name in servers}

    # 2. p99 over the sleeping endpoint is finite and within the bucket its sleeps fall in.
    p99 = scalar_by(prometheus.query(
        "histogram_quantile(0.99, sum by (le, route)"
        " (rate(http_request_duration_seconds_bucket[1m])))"
    ), "route")
    assert 0.1 <= p99["/sleep/{ms}"] <= 0.25, p99
    assert all(value == value and value != float("inf") for value in p99.values()), p99

    # 3. The error ratio per route is the share of requests made to fail.
    # (A route without any 5xx series has a ratio of 0, not none: the `or ... * 0`.)
    ratio = scalar_by(prometheus.query(
        '(sum by (route) (http_requests_total{status=~"5.."})'
        " or sum by (route) (http_requests_total) * 0)"
        " / sum by (route) (http_requests_total)"
    ), "route")
    flaky_failed = len(servers) * (FLAKY // 4 + 1)  # + the warm-up /flaky/0
    assert ratio["/flaky/{n}"] == pytest.approx(flaky_failed / expected["/flaky/{n}"])
    assert ratio["/boom"] == 1.0
    assert ratio["/pid"] == 0.0 and ratio["/sleep/{ms}"] == 0.0
    rate_ratio = scalar_by(prometheus.query(
        'sum by (route) (rate(http_requests_total{status=~"5.."}[1m]))'
        " / sum by (route) (rate(http_requests_total[1m]))"
    ), "route")
    # rate() leaves out the warm-up (a series' first sample), so a quarter; only roughly,
    # because Prometheus extrapolates each series to the window's edges by its own amount.
    assert rate_ratio["/flaky/{n}"] == pytest.approx(0.25, abs=0.03)
    exceptions = scalar_by(prometheus.query(
        "sum by (route) (http_request_exceptions_total)"), "route")
    assert exceptions == {"/boom": (BOOMS + 1) * len(servers)}

    # 4. Nothing is in flight any more, on any instance.
    in_flight = scalar_by(prometheus.query("sum by (job) (http_requests_in_flight)"), "job")
    assert set(in_flight.values()) == {0.0}

    # 5. Every dashboard expression returns data.
    if DASHBOARD.exists():
        variables = {"job": ".+", "route": ".+", "__rate_interval": "1m", "__range": "5m",
                     "__interval": "15s"}
        dashboard = json.loads(DASHBOARD.read_text())
        panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
        empty = []
        checked = 0
        for panel in panels:
            for target in panel.get("targets", []):
                expr = re.sub(r"\$\{?(\w+)\}?", lambda m: variables[m.group(1)],
                              target["expr"])
                checked += 1
                if not prometheus.query(expr):
                    empty.append((panel["title"], expr))
        assert checked > 5
        assert not empty, empty
    assert time.monotonic() - started < 120

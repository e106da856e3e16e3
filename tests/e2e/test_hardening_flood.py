"""Series under attack: floods of random paths, methods, hosts and statuses stay bounded.

The bound is computed from what the app can answer: its route templates (plus
``__unmatched__``), the closed method set (plus ``_OTHER``) and the statuses it can return,
and never more than ``max_label_sets`` per family. Memory growth during the flood is
measured with tracemalloc after a warm-up, and printed (run with ``-s`` to see it).

In process, but a load test (120,000 requests under tracemalloc, most of a minute on two
busy cores), so it runs with the e2e layer; the label cap itself: tests/unit/test_label_cap.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
import tracemalloc
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_metrics import OTHER_METHOD, OVERFLOW, UNMATCHED_ROUTE, MetricsMiddleware
from asgi_metrics.core.labels import KNOWN_METHODS
from asgi_metrics.core.settings import DEFAULT_MAX_LABEL_SETS
from tests.support.apps.odd_status import odd_status_app
from tests.support.asgi import call_asgi, fetch_metrics, uvicorn_scope
from tests.support.scrape import series_of

TEMPLATES = ["/", "/items/{item_id}", "/users/{user_id}/orders/{order_id}"]
METHOD_LABELS = KNOWN_METHODS | {OTHER_METHOD}


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _starlette_app() -> Starlette:
    return Starlette(routes=[
        Route("/", _ok),
        Route("/items/{item_id}", _ok, methods=["GET", "POST", "DELETE"]),
        Route("/users/{user_id}/orders/{order_id}", _ok),
    ])


def _random_path(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:  # matches a route, with a random id
        ident = "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 12)))
        return rng.choice([f"/items/{ident}", f"/users/{ident}/orders/{ident[::-1]}"])
    if kind < 0.4:  # a trailing slash: Starlette answers with a redirect
        return f"/items/{rng.randint(0, 10**9)}/"
    # Anything at all, including characters no route would ever contain.
    length = rng.randint(0, 60)
    return "/" + "".join(chr(rng.randint(0x20, 0x2FFF)) for _ in range(length))


def _random_method(rng: random.Random, tokens: list[str]) -> str:
    return rng.choice(tokens) if rng.random() < 0.7 else rng.choice(sorted(KNOWN_METHODS))


def _random_host(rng: random.Random) -> bytes:
    return "".join(rng.choices(string.ascii_lowercase + ".-:", k=rng.randint(1, 40))).encode()


async def _drive(app: Any, scopes: Any, warmup: int) -> tuple[int, int, int]:
    """Send every scope through ``app``; return (requests, bytes traced after warm-up,
    bytes traced at the end)."""
    count = 0
    warm = 0
    for scope in scopes:
        sent, exc = await call_asgi(app, scope, [{"type": "http.request", "body": b""}])
        assert exc is None, exc
        assert sent and sent[0]["type"] == "http.response.start"
        count += 1
        if count == warmup:
            warm = tracemalloc.get_traced_memory()[0]
    return count, warm, tracemalloc.get_traced_memory()[0]


def _labels(text: str, family: str) -> list[dict[str, str]]:
    return [dict(key) for key in series_of(text, family)]


def test_flood_of_paths_methods_and_hosts_stays_within_route_bound() -> None:
    rng = random.Random(20261122)
    registry = CollectorRegistry()
    app = MetricsMiddleware(_starlette_app(), registry=registry)
    tokens = [
        "".join(rng.choices(string.ascii_letters + "!#$%&'*+-.^_`|~", k=rng.randint(1, 12)))
        for _ in range(10_000)
    ]
    n_paths = 100_000

    def scopes() -> Any:
        for index in range(n_paths):
            # 10,000 of them are the random method tokens, every one used once.
            method = tokens[index] if index < len(tokens) else _random_method(rng, tokens)
            yield uvicorn_scope(
                _random_path(rng), method, [(b"host", _random_host(rng))]
            )

    tracemalloc.start()
    try:
        count, warm, end = asyncio.run(_drive(app, scopes(), warmup=5_000))
    finally:
        tracemalloc.stop()
    status, text = asyncio.run(fetch_metrics(app))
    assert status == 200

    # What this app can answer: 200, the slash redirect, 404, 405.
    statuses = {"200", "307", "404", "405"}
    routes = set(TEMPLATES) | {UNMATCHED_ROUTE}
    bound = len(routes) * len(METHOD_LABELS) * len(statuses)
    series = _labels(text, "http_requests_total")
    assert 0 < len(series) <= min(bound, DEFAULT_MAX_LABEL_SETS)
    assert {s["route"] for s in series} <= routes
    assert {s["method"] for s in series} <= METHOD_LABELS
    assert {s["status"] for s in series} <= statuses
    assert sum(series_of(text, "http_requests_total").values()) == count == n_paths
    growth = end - warm
    print(
        f"\nFLOOD starlette: {count} requests, {len(series)} series (bound {bound}),"
        f" traced memory growth after warm-up {growth / 1024:.1f} KiB"
    )
    # Nothing per request is kept: growth after warm-up is noise, not O(requests).
    assert growth < 1024 * 1024


def test_flood_of_odd_statuses_and_methods_hits_the_cap_not_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(7)
    registry = CollectorRegistry()
    app = MetricsMiddleware(odd_status_app, registry=registry)
    invalid = ["0", "-1", "99", "600", "999", "1000000", "abc", ""]
    methods = [*sorted(KNOWN_METHODS), "BREW", "get", "X" * 300]
    n = 20_000

    def scopes() -> Any:
        for _ in range(n):
            code = rng.choice(invalid) if rng.random() < 0.05 else str(rng.randint(100, 599))
            yield uvicorn_scope(f"/{code}", rng.choice(methods))

    caplog.set_level(logging.WARNING, logger="asgi_metrics")
    tracemalloc.start()
    try:
        count, warm, end = asyncio.run(_drive(app, scopes(), warmup=10_000))
    finally:
        tracemalloc.stop()
    status, text = asyncio.run(fetch_metrics(app))
    assert status == 200

    # No router: every request is __unmatched__; statuses 100-599 plus "other".
    bound = 1 * len(METHOD_LABELS) * (500 + 1)
    assert bound > DEFAULT_MAX_LABEL_SETS  # so this flood is stopped by the cap
    for family in ("http_requests_total", "http_request_duration_seconds_count"):
        series = series_of(text, family)
        assert len(series) == DEFAULT_MAX_LABEL_SETS
        assert sum(series.values()) == count == n  # folded, not dropped
        overflow = dict.fromkeys(("method", "route", "status"), OVERFLOW)
        assert series[tuple(sorted(overflow.items()))] > 0
    warnings = [r for r in caplog.records if "max_label_sets" in r.getMessage()]
    assert len(warnings) == 1  # once per family, not per request
    print(
        f"\nFLOOD odd statuses: {count} requests, {len(series)} series"
        f" (uncapped bound {bound}, cap {DEFAULT_MAX_LABEL_SETS}),"
        f" traced memory growth in the second half {(end - warm) / 1024:.1f} KiB"
    )
    assert end - warm < 1024 * 1024

"""Series under attack through request-derived labels (issue 13): floods whose label
values an attacker chooses (random header values, random ``set_label`` values) stay
bounded, and every request is still counted under exactly the value the rule gives it.

The rule is modelled here independently (:class:`Bound`): a value outside ``allowed``, longer
than 128 characters or starting with ``/`` is ``__other__``; a label without ``allowed``
keeps the first ``max_label_values`` distinct values in arrival order, later ones are
``__other__``; the default is always kept. The floods run in one thread, so arrival order
is send order and the expected count of every label value is exact. The values include
quotes, backslashes, spaces and Latin-1 letters, so they also check the exposition's
escaping: the values parsed back are the values sent. A last flood has more label sets
than ``max_label_sets``: the family cap still holds on top, and the totals stay exact.

In process, but load tests (tens of thousands of requests, some under tracemalloc), so
they run with the e2e layer, as tests/e2e/test_hardening_flood.py does.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
import tracemalloc
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from flask import Flask
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_metrics import OTHER_VALUE, OVERFLOW, MetricsMiddleware, from_header, set_label
from asgi_metrics.core.settings import DEFAULT_MAX_LABEL_VALUES
from tests.support.asgi import call_asgi, fetch_metrics, uvicorn_scope
from tests.support.scrape import Samples, parse_samples
from tests.support.wsgi import InProcessServer, environ
from wsgi_metrics.flask import Metrics

PLANS = ["free", "pro"]
# Printable ASCII (quotes and backslashes included) and Latin-1 letters: what a header
# value can carry.
ALPHABET = string.ascii_letters + string.digits + " \"\\'{}=,./-_" + "éüñßÆ"
POOL = [f'tenant "{n}" \\ é' for n in range(40)]


class Bound:
    """The bound of one label, as docs/semantics.md states it."""

    def __init__(self, allowed: list[str] | None, default: str, max_values: int) -> None:
        self.allowed = None if allowed is None else set(allowed)
        self.kept = {default}
        self.max_values = max_values
        self.taken = 0

    def __call__(self, value: str) -> str:
        if value in self.kept or value == OTHER_VALUE:
            return value
        if self.allowed is not None:
            return value if value in self.allowed else OTHER_VALUE
        if len(value) > 128 or value.startswith("/") or self.taken >= self.max_values:
            return OTHER_VALUE
        self.taken += 1
        self.kept.add(value)
        return value


def random_value(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.05:
        return "/" + "".join(rng.choices(string.ascii_lowercase + "/", k=rng.randint(0, 30)))
    if kind < 0.10:
        return "".join(rng.choices(ALPHABET, k=rng.randint(129, 400)))
    if kind < 0.12:
        return OTHER_VALUE  # an attacker naming the fold itself
    if kind < 0.40:
        return rng.choice(PLANS)
    if kind < 0.70:  # a few values sent again and again: some kept, most folded
        return rng.choice(POOL)
    return "".join(rng.choices(ALPHABET, k=rng.randint(0, 128)))


def summed(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples called ``name``, summed by the values of ``labels``."""
    out: dict[tuple[str, ...], float] = {}
    for (sample, pairs), value in samples.items():
        if sample == name:
            got = dict(pairs)
            key = tuple(got[label] for label in labels)
            out[key] = out.get(key, 0) + value
    return out


def count(expected: dict[tuple[str, ...], int], key: tuple[str, ...]) -> None:
    expected[key] = expected.get(key, 0) + 1


def check_flood(
    samples: Samples, expected: dict[tuple[str, ...], int], n: int, max_values: int,
    routes: int,
) -> int:
    """The exact counts by (tenant, plan); the bounds on values and series. Returns the
    number of series."""
    by_value = summed(samples, "http_requests_total", "tenant", "plan")
    assert by_value == expected
    assert sum(by_value.values()) == n
    tenants = {tenant for tenant, _ in by_value}
    assert len(tenants) <= max_values + 2  # the kept values, the default, __other__
    assert {plan for _, plan in by_value} <= {*PLANS, "none", OTHER_VALUE}
    series = [key for key in samples if key[0] == "http_requests_total"]
    assert len(series) <= routes * (max_values + 2) * (len(PLANS) + 2)
    durations = summed(samples, "http_request_duration_seconds_count", "tenant", "plan")
    assert durations == by_value
    return len(series)


# --- through Starlette (ASGI) ---------------------------------------------------------------


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def test_flood_of_random_header_values_asgi() -> None:
    rng = random.Random(20261202)
    app = MetricsMiddleware(
        Starlette(routes=[Route("/", _ok), Route("/items/{item_id}", _ok)]),
        registry=CollectorRegistry(),
        labels={
            "tenant": from_header("X-Tenant"),
            "plan": from_header("X-Plan", allowed=PLANS, default="none"),
        },
    )
    tenant_bound = Bound(None, "", DEFAULT_MAX_LABEL_VALUES)
    plan_bound = Bound(PLANS, "none", DEFAULT_MAX_LABEL_VALUES)
    expected: dict[tuple[str, ...], int] = {}
    n = 20_000

    def scopes() -> Iterator[dict[str, Any]]:
        for index in range(n):
            headers = [(b"host", b"testserver")]
            tenant = plan = None
            if rng.random() < 0.9:
                tenant = random_value(rng)
                headers.append((b"x-tenant", tenant.encode("latin-1")))
            if rng.random() < 0.8:
                plan = random_value(rng)
                headers.append((b"x-plan", plan.encode("latin-1")))
            count(expected, (tenant_bound("" if tenant is None else tenant),
                             plan_bound("none" if plan is None else plan)))
            path = "/" if index % 2 else f"/items/{rng.randint(0, 10**9)}"
            yield uvicorn_scope(path, "GET", headers)

    async def drive(warmup: int) -> tuple[int, int]:
        warm = 0
        for index, scope in enumerate(scopes(), 1):
            sent, exc = await call_asgi(app, scope, [{"type": "http.request", "body": b""}])
            assert exc is None, exc
            assert sent[0]["status"] == 200
            if index == warmup:
                warm = tracemalloc.get_traced_memory()[0]
        return warm, tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        warm, end = asyncio.run(drive(warmup=5_000))
    finally:
        tracemalloc.stop()
    status, text = asyncio.run(fetch_metrics(app))
    assert status == 200
    samples = parse_samples(text)
    series = check_flood(samples, expected, n, DEFAULT_MAX_LABEL_VALUES, routes=2)
    # The kept values are the first ones sent, parsed back unchanged (escaping).
    assert tenant_bound.kept <= {tenant for tenant, _ in expected}
    assert len(tenant_bound.kept) == DEFAULT_MAX_LABEL_VALUES + 1
    print(f"\nFLOOD labels (starlette): {n} requests, {series} series,"
          f" traced memory growth after warm-up {(end - warm) / 1024:.1f} KiB")
    assert end - warm < 1024 * 1024  # nothing kept per request or per value folded


# --- through Flask (WSGI): header values and set_label values --------------------------------


def test_flood_of_random_header_and_set_label_values_wsgi() -> None:
    rng = random.Random(13)
    flask_app = Flask(__name__)
    assigned: list[str | None] = []  # what the next request's view assigns

    @flask_app.get("/items/<int:item_id>")
    def item(item_id: int) -> str:
        value = assigned.pop()
        if value is not None:
            set_label("plan", value)
        return "ok"

    @flask_app.get("/")
    def index() -> str:
        assigned.pop()
        return "ok"

    max_values = 10
    Metrics(
        flask_app, registry=CollectorRegistry(), max_label_values=max_values,
        labels={
            "tenant": from_header("X-Tenant"),
            "plan": from_header("X-Plan", allowed=PLANS, default="none"),
        },
    )
    tenant_bound = Bound(None, "", max_values)
    plan_bound = Bound(PLANS, "none", max_values)
    expected: dict[tuple[str, ...], int] = {}
    n = 10_000
    for index in range(n):
        extra: dict[str, str] = {}
        tenant = random_value(rng) if rng.random() < 0.9 else None
        if tenant is not None:
            extra["HTTP_X_TENANT"] = tenant
        plan = random_value(rng) if rng.random() < 0.5 else None
        if plan is not None:
            extra["HTTP_X_PLAN"] = plan
        path = "/" if index % 3 == 0 else f"/items/{index}"
        value = random_value(rng) if rng.random() < 0.5 else None
        assigned.append(value)
        if value is not None and path != "/":
            plan = value  # set_label wins over the header
        count(expected, (tenant_bound("" if tenant is None else tenant),
                         plan_bound("none" if plan is None else plan)))
        server = InProcessServer()
        assert server.call(flask_app.wsgi_app, environ(path, **extra)) == b"ok"
        assert server.status == "200 OK"
    assert assigned == []
    server = InProcessServer()
    samples = parse_samples(server.call(flask_app.wsgi_app, environ("/metrics")).decode())
    series = check_flood(samples, expected, n, max_values, routes=2)
    print(f"\nFLOOD labels (flask): {n} requests, {series} series")


# --- the family cap on top ------------------------------------------------------------------


def test_more_label_sets_than_max_label_sets_overflow_with_exact_totals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(99)
    caplog.set_level(logging.WARNING, logger="asgi_metrics")
    app = MetricsMiddleware(
        Starlette(routes=[Route("/", _ok)]),
        registry=CollectorRegistry(),
        max_label_values=500,
        max_label_sets=100,
        labels={"tenant": from_header("X-Tenant")},
    )
    n = 5_000

    def scopes() -> Iterable[dict[str, Any]]:
        for _ in range(n):
            tenant = "".join(rng.choices(string.ascii_lowercase, k=8))
            yield uvicorn_scope("/", "GET", [(b"x-tenant", tenant.encode())])

    async def drive() -> None:
        for scope in scopes():
            sent, exc = await call_asgi(app, scope, [{"type": "http.request", "body": b""}])
            assert exc is None and sent[0]["status"] == 200

    asyncio.run(drive())
    status, text = asyncio.run(fetch_metrics(app))
    assert status == 200
    samples = parse_samples(text)
    for family in ("http_requests_total", "http_request_duration_seconds_count"):
        series = {labels: value for (name, labels), value in samples.items() if name == family}
        assert len(series) == 100
        assert sum(series.values()) == n
        overflow = frozenset(dict.fromkeys(("method", "route", "status", "tenant"),
                                           OVERFLOW).items())
        assert series[overflow] > 0
    # The family cap folded new label sets long before the label bound folded values:
    # __other__ (from value 501 on) only ever reached the overflow series.
    assert summed(samples, "http_requests_total", "tenant").get((OTHER_VALUE,), 0) == 0
    assert sum("max_label_sets" in r.getMessage() for r in caplog.records) == 1
    assert sum("max_label_values" in r.getMessage() for r in caplog.records) == 1

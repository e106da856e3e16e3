"""In-process ASGI benchmark: await each app N times per batch inside one event loop.

No sockets, no server: a synthetic HTTP scope, a ``receive`` that yields one ``http.request``
(then ``http.disconnect``, as uvicorn does once the response is complete) and a ``send`` that
discards. What remains is the app plus the middleware, so the difference to the bare app is
the middleware's own cost per request.
"""

from __future__ import annotations

import asyncio
import functools
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from benchmarks._harness import (
    BatchRunner,
    Outcome,
    clock,
    counted,
    interleave,
    options_added,
    prepare,
    summarise,
)
from benchmarks.asgi_variants import (
    HIT_BODY,
    HIT_PATH,
    OPTION_PAIRS,
    VARIANTS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    make_starlette,
)

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": HIT_PATH,
    "raw_path": HIT_PATH.encode(),
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"*/*"),
        (b"x-tenant", b"acme"),  # read by the "one header label" variant
    ],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}

class _Receive:
    """One ``http.request``, then ``http.disconnect`` forever (uvicorn after the response)."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = False

    async def __call__(self) -> Message:
        if self._done:
            return {"type": "http.disconnect"}
        self._done = True
        return {"type": "http.request", "body": b"", "more_body": False}


async def _discard(message: Message) -> None:
    return None


async def drive(app: ASGIApp, n: int) -> float:
    scope, send = SCOPE, _discard
    start = clock()
    for _ in range(n):
        await app(dict(scope), _Receive(), send)
    return clock() - start


async def check(app: ASGIApp) -> None:
    """One request with a recording send: fail loudly if the variant broke the response."""
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    await app(dict(SCOPE), _Receive(), record)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    if status != 200 or body != HIT_BODY:
        raise AssertionError(f"bad response: status={status} body={body[:60]!r}")


# The FLOOR: the prometheus_client work one request needs, label children already resolved,
# including the two clock reads any latency metric needs. Measured as floor_app - empty_app.
def _floor_apps() -> tuple[ASGIApp, ASGIApp]:
    registry = CollectorRegistry()
    labels = ("GET", "/users/{user_id}", "200")
    counter = Counter("floor_requests", "r", ["method", "route", "status"], registry=registry)
    histogram = Histogram("floor_seconds", "d", ["method", "route", "status"], registry=registry)
    gauge = Gauge("floor_in_progress", "g", ["method", "route"], registry=registry)
    c, h, g = counter.labels(*labels), histogram.labels(*labels), gauge.labels(*labels[:2])

    async def floor_app(scope: Scope, receive: Receive, send: Send) -> None:
        g.inc()
        start = perf_counter()
        c.inc()
        h.observe(perf_counter() - start)
        g.dec()

    async def empty_app(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    return floor_app, empty_app


def runner(loop: asyncio.AbstractEventLoop, app: ASGIApp) -> BatchRunner:
    return lambda n: loop.run_until_complete(drive(app, n))


def catalogue(names: tuple[str, ...], extra_routes: int) -> list[tuple[str, str, Any]]:
    """(name, kind, build) of the named variants, building apps with ``extra_routes``."""
    return [
        (v.name, v.kind, functools.partial(v.build, extra_routes))
        for v in VARIANTS
        if v.name in names
    ]


def prepare_variants(
    loop: asyncio.AbstractEventLoop, variants: list[tuple[str, str, Any]], warmup: int
) -> tuple[dict[str, BatchRunner], dict[str, Outcome]]:
    """Build, check and warm up ASGI variants in ``loop`` (see ``_harness.prepare``)."""
    return prepare(
        variants,
        check=lambda app: loop.run_until_complete(check(app)),
        make_runner=lambda app: runner(loop, app),
        warmup=warmup,
    )


def verify_ours(loop: asyncio.AbstractEventLoop, n: int = 25) -> str:
    """Our middleware must really count what it is timed on: drive ``n`` requests and read
    the counter back from its registry."""
    try:
        from asgi_metrics import MetricsMiddleware
    except ImportError:
        return "skipped: asgi_metrics.MetricsMiddleware not importable"
    registry = CollectorRegistry()
    app = make_starlette(0)
    app.add_middleware(MetricsMiddleware, registry=registry)
    loop.run_until_complete(drive(app, n))
    return counted(registry, "/users/{user_id}", n)


def run_main(n: int, repeats: int, warmup: int) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    try:
        names = tuple(v.name for v in VARIANTS)
        runners, outcomes = prepare_variants(loop, catalogue(names, 0), warmup)
        floor_app, empty_app = _floor_apps()
        for name, app, kind in (("floor", floor_app, "floor"), ("empty", empty_app, "empty")):
            outcomes[name] = Outcome(name, kind)
            loop.run_until_complete(drive(app, warmup))
            runners[name] = runner(loop, app)
        interleave(runners, outcomes, n, repeats)
        verified = verify_ours(loop)
    finally:
        loop.close()

    floor = outcomes.pop("floor")
    empty = outcomes.pop("empty")
    result = summarise(outcomes, "bare")
    floor_us = None
    if floor.median_us is not None and empty.median_us is not None:
        floor_us = floor.median_us - empty.median_us
    result["floor"] = {
        "floor_app": floor.as_dict(),
        "empty_app": empty.as_dict(),
        "floor_us": None if floor_us is None else round(floor_us, 4),
        "description": "gauge.inc + 2x perf_counter + counter.inc + histogram.observe"
        " + gauge.dec on resolved label children",
    }
    ours = result["variants"].get("ours", {}).get("overhead_us")
    result["ours_over_floor"] = (
        round(ours / floor_us, 4) if ours is not None and floor_us and floor_us > 0 else None
    )
    result["options_added_us"] = options_added(outcomes, OPTION_PAIRS)
    result["ours_counts_verified"] = verified
    result["params"] = {"n_per_batch": n, "repeats": repeats, "warmup": warmup, "path": HIT_PATH}
    return result


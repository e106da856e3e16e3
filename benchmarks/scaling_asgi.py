"""Route-count scaling: the ASGI overhead with 1, 100 and 1,000 extra routes before the hit
route, once on the full Starlette app and once around a router stub.

All sizes run in one round-robin (every round visits every size and variant), so a noisy
phase of the machine lands on all sizes alike instead of on whichever size ran during it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks._harness import BatchRunner, Outcome, interleave, summarise
from benchmarks.asgi_variants import HIT_BODY, ASGIApp, Receive, Scope, Send, make_starlette
from benchmarks.inprocess_asgi import catalogue, prepare_variants

SIZES = (1, 100, 1000)
FULL_APP_VARIANTS = ("bare", "ours", "prometheus-fastapi-instrumentator", "starlette-exporter")

Catalogue = Callable[[int], list[tuple[str, str, Any]]]


def router_stub(extra_routes: int) -> ASGIApp:
    """An app that writes into the scope what Starlette's router writes after matching the hit
    route among ``extra_routes + 1`` routes, then answers, without doing the matching.

    Around it, a middleware's overhead is measured without the router's own O(routes) cost
    in the baseline: at 1,000 routes that cost is ~450 µs and its noise alone is larger than
    a few-µs overhead, so the full-app table cannot tell "flat" from "grows a little".
    """
    app = make_starlette(extra_routes)
    router = app.router
    route = router.routes[-1]
    start = {"type": "http.response.start", "status": 200,
             "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                         (b"content-length", str(len(HIT_BODY)).encode())]}
    body = {"type": "http.response.body", "body": HIT_BODY}

    async def stub(scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = app
        scope.setdefault("router", router)
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {"user_id": "42"}
        await send(dict(start))
        await send(dict(body))

    return stub


def _ours_around_stub(extra_routes: int) -> ASGIApp:
    from asgi_metrics import MetricsMiddleware

    wrapped: ASGIApp = MetricsMiddleware(router_stub(extra_routes), registry=CollectorRegistry())
    return wrapped


def _stub_catalogue(size: int) -> list[tuple[str, str, Any]]:
    return [
        ("router stub", "bare", lambda: router_stub(size)),
        ("ours", "ours", lambda: _ours_around_stub(size)),
    ]


def _full_app_catalogue(size: int) -> list[tuple[str, str, Any]]:
    return catalogue(FULL_APP_VARIANTS, size)


def _flatness(sizes: dict[str, Any]) -> dict[str, float | None]:
    """Overhead at the largest size / overhead at the smallest, per variant."""
    first, last = sizes[str(SIZES[0])]["variants"], sizes[str(SIZES[-1])]["variants"]
    flatness: dict[str, float | None] = {}
    for name, row in first.items():
        low, high = row["overhead_us"], last.get(name, {}).get("overhead_us")
        flatness[name] = round(high / low, 4) if low and high is not None else None
    return flatness


def _run(entries: Catalogue, baseline: str, n: int, repeats: int, warmup: int) -> dict[str, Any]:
    loop = asyncio.new_event_loop()
    runners: dict[str, BatchRunner] = {}
    outcomes: dict[str, Outcome] = {}
    per_size: dict[int, dict[str, Outcome]] = {}
    try:
        for size in SIZES:
            size_runners, per_size[size] = prepare_variants(loop, entries(size), warmup)
            for name, outcome in per_size[size].items():
                outcomes[f"{name}@{size}"] = outcome  # the same objects: results land per size
                if name in size_runners:
                    runners[f"{name}@{size}"] = size_runners[name]
        interleave(runners, outcomes, n, repeats)
    finally:
        loop.close()
    sizes = {str(size): summarise(o, baseline) for size, o in per_size.items()}
    return {
        "params": {"n_per_batch": n, "repeats": repeats, "warmup": warmup,
                   "extra_routes": list(SIZES)},
        "sizes": sizes,
        "overhead_ratio_last_to_first": _flatness(sizes),
    }


def run(n: int, repeats: int, warmup: int) -> dict[str, Any]:
    result = _run(_full_app_catalogue, "bare", n, repeats, warmup)
    result["router_stub"] = _run(_stub_catalogue, "router stub", n, repeats, warmup)
    return result

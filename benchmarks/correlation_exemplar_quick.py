"""In-process cost of correlation IDs and exemplars, per request, against the plain middleware.

    python benchmarks/correlation_exemplar_quick.py [--requests 20000] [--rounds 9]

Each variant drives the middleware directly (no server, no HTTP parsing) around a trivial
ASGI app; rounds are interleaved and the median per-request time is reported, with the
difference to the baseline of the same span situation. Times are this thread's CPU time
(``time.thread_time``), so other processes competing for the CPU do not count; the minimum
over the rounds is shown as well.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from asgi_metrics import MetricsMiddleware

START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"x")]}
BODY = {"type": "http.response.body", "body": b"ok"}


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send(START)
    await send(BODY)


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: Any) -> None:
    pass


def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http", "method": "GET", "path": "/items", "root_path": "", "scheme": "http",
        "headers": headers, "client": ("127.0.0.1", 1),
    }


def variant(
    options: dict[str, Any], headers: list[tuple[bytes, bytes]], span: bool
) -> Callable[[int], float]:
    middleware = MetricsMiddleware(app, registry=CollectorRegistry(), **options)
    request_scope = scope(headers)
    tracer = TracerProvider().get_tracer("bench")

    async def loop(n: int) -> float:
        started = time.thread_time()
        for _ in range(n):
            await middleware(dict(request_scope), receive, send)
        return time.thread_time() - started

    def run(n: int) -> float:
        if span:
            with tracer.start_as_current_span("server"):
                return asyncio.run(loop(n)) / n
        return asyncio.run(loop(n)) / n

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    incoming = [(b"x-request-id", b"abc-123")]
    variants = {
        "plain (no span)": variant({"exemplars": False}, [], False),
        "plain, exemplars on (no span)": variant({}, [], False),
        "correlation_id, generated": variant({"correlation_id": True, "exemplars": False}, [],
                                             False),
        "correlation_id, incoming": variant({"correlation_id": True, "exemplars": False},
                                            incoming, False),
        "plain (sampled span)": variant({"exemplars": False}, [], True),
        "exemplars (sampled span)": variant({}, [], True),
    }
    baselines = {"no span": "plain (no span)", "sampled span": "plain (sampled span)"}
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for run in variants.values():
        run(2000)  # warm up: first series, caches
    for _ in range(args.rounds):
        for name, run in variants.items():
            timings[name].append(run(args.requests))
    medians = {name: statistics.median(values) * 1e6 for name, values in timings.items()}
    minima = {name: min(values) * 1e6 for name, values in timings.items()}
    print(f"{'variant':34} {'median us':>10} {'added':>8} {'min us':>8} {'added':>8}")
    for name, value in medians.items():
        base = baselines["sampled span" if "sampled span" in name else "no span"]
        print(
            f"{name:34} {value:10.2f} {value - medians[base]:+8.2f}"
            f" {minima[name]:8.2f} {minima[name] - minima[base]:+8.2f}"
        )


if __name__ == "__main__":
    main()

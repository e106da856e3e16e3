"""Scrape benchmark: render 5,000 label sets of counter + histogram (default buckets).

200 routes x 5 methods x 5 statuses. Times prometheus_client.generate_latest (and gzip level 9
of its output) against our renderer through the ``render_ours`` hook.
"""

from __future__ import annotations

import gzip
import statistics
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

ROUTES = tuple(f"/api/v1/resource{i}/{{item_id}}" for i in range(200))
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
STATUSES = ("200", "201", "400", "404", "500")
LABEL_NAMES = ("method", "route", "status")

LabelSet = tuple[str, str, str]


def label_sets() -> list[LabelSet]:
    return [(m, r, s) for r in ROUTES for m in METHODS for s in STATUSES]


def populate_prometheus_client(sets: Sequence[LabelSet]) -> CollectorRegistry:
    registry = CollectorRegistry()
    counter = Counter("http_requests", "Requests.", LABEL_NAMES, registry=registry)
    histogram = Histogram(
        "http_request_duration_seconds", "Latency.", LABEL_NAMES, registry=registry
    )
    for i, labels in enumerate(sets):
        for _ in range(1 + i % 7):  # the same requests render_ours records
            counter.labels(*labels).inc()
            histogram.labels(*labels).observe((i % 100) / 250.0)
    return registry


def render_ours(sets: Sequence[LabelSet]) -> Callable[[], bytes] | None:
    """HOOK for our renderer: populate ``sets`` through asgi_metrics and return a zero-argument
    callable that renders the text exposition, or None while asgi_metrics is not there.

    Data goes in through the middleware's recorder (what a request does) and comes out through
    the same ``Exposition.render`` that serves ``/metrics`` (text format, before gzip).
    """
    try:
        from asgi_metrics import MetricsMiddleware
    except ImportError:
        return None

    async def unused_app(scope: Any, receive: Any, send: Any) -> None:
        return None

    middleware = MetricsMiddleware(unused_app, registry=CollectorRegistry())
    recorder = middleware.recorder
    for i, (method, route, status) in enumerate(sets):
        for _ in range(1 + i % 7):
            recorder.finish(method, route, int(status), (i % 100) / 250.0, in_flight=False)
    return lambda: recorder.exposition.render(False)


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median milliseconds of ``repeats`` calls, and the last result."""
    samples: list[float] = []
    out: Any = None
    for _ in range(repeats):
        start = perf_counter()
        out = fn()
        samples.append((perf_counter() - start) * 1e3)
    return statistics.median(samples), out


def _measure(render: Callable[[], bytes], repeats: int) -> dict[str, Any]:
    # The first render is timed apart ("cold"): a renderer may cache per-series text then,
    # and a long-running server scrapes the same series again and again.
    cold_ms, _ = _time(render, 1)
    render_ms, body = _time(render, repeats)
    gzip_ms, packed = _time(lambda: gzip.compress(body, compresslevel=9), repeats)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "cold_render_ms": round(cold_ms, 3),
        "render_ms": round(render_ms, 3),
        "gzip9_ms": round(gzip_ms, 3),
        "render_plus_gzip9_ms": round(render_ms + gzip_ms, 3),
        "bytes_plain": len(body),
        "bytes_gzip9": len(packed),
        "sample_lines": samples,
    }


def run(repeats: int) -> dict[str, Any]:
    sets = label_sets()
    registry = populate_prometheus_client(sets)
    result: dict[str, Any] = {
        "params": {"label_sets": len(sets), "repeats": repeats},
        "generate_latest": _measure(lambda: generate_latest(registry), repeats),
    }
    # The same without the *_created samples (10,000 of the 100,000 lines), for a like-for-like
    # line count with renderers that do not emit them.
    disable_created_metrics()
    try:
        result["generate_latest_no_created"] = _measure(lambda: generate_latest(registry), repeats)
    finally:
        enable_created_metrics()
    ours = render_ours(sets)
    if ours is None:
        result["ours"] = {"status": "skipped", "reason": "asgi_metrics renderer not available"}
    else:
        result["ours"] = _measure(ours, repeats)
        speedup = result["generate_latest"]["render_ms"] / result["ours"]["render_ms"]
        result["ours"]["speedup_vs_generate_latest"] = round(speedup, 2)
    return result

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

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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
        counter.labels(*labels).inc(1 + i % 7)
        histogram.labels(*labels).observe((i % 100) / 250.0)
    return registry


def render_ours(sets: Sequence[LabelSet]) -> Callable[[], bytes] | None:
    """HOOK for our renderer: populate ``sets`` through asgi_metrics and return a zero-argument
    callable that renders the exposition bytes, or None while asgi_metrics has no renderer."""
    try:
        import asgi_metrics
    except ImportError:
        return None
    if not hasattr(asgi_metrics, "MetricsMiddleware"):
        return None
    return None  # replaced once asgi_metrics exposes its renderer API


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
    render_ms, body = _time(render, repeats)
    gzip_ms, packed = _time(lambda: gzip.compress(body, compresslevel=9), repeats)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
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
    ours = render_ours(sets)
    if ours is None:
        result["ours"] = {"status": "skipped", "reason": "asgi_metrics renderer not available"}
    else:
        result["ours"] = _measure(ours, repeats)
        speedup = result["generate_latest"]["render_ms"] / result["ours"]["render_ms"]
        result["ours"]["speedup_vs_generate_latest"] = round(speedup, 2)
    return result

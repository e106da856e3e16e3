"""Scrape benchmark: render 5,000 label sets of counter + histogram (default buckets).

200 routes x 5 methods x 5 statuses. Times prometheus_client.generate_latest (and gzip level 9
of its output) against our renderer through the ``render_ours`` hook.
"""

from __future__ import annotations

import gc
import gzip
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

from benchmarks._harness import clock

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

    # The default cap on distinct label sets (2,000) is below this benchmark's 5,000: raise it
    # so every set is rendered as itself rather than folded into the overflow series.
    middleware = MetricsMiddleware(
        unused_app, registry=CollectorRegistry(), max_label_sets=2 * len(sets)
    )
    recorder = middleware.recorder
    for i, (method, route, status) in enumerate(sets):
        for _ in range(1 + i % 7):
            recorder.finish(method, route, int(status), (i % 100) / 250.0, in_flight=False)
    return lambda: middleware.exposition.render(False)


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()  # garbage left by the previous renderer is not this one's cost
    start = clock()
    out = fn()
    return (clock() - start) * 1e3, out


def _without_created(registry: CollectorRegistry) -> bytes:
    disable_created_metrics()  # a process-wide switch: set only for this one call
    try:
        return generate_latest(registry)
    finally:
        enable_created_metrics()


def _measure(renderers: dict[str, Callable[[], bytes]], repeats: int) -> dict[str, Any]:
    """Time each renderer's first render apart ("cold": a renderer may cache per-series text
    then, and a server scrapes the same series again and again), then ``repeats`` rounds of
    every renderer in turn, and gzip -9 of each one's output likewise; medians in ms."""
    cold = {name: _ms(render)[0] for name, render in renderers.items()}
    warm: dict[str, list[float]] = {name: [] for name in renderers}
    bodies: dict[str, bytes] = {}
    for _ in range(repeats):
        for name, render in renderers.items():
            elapsed, bodies[name] = _ms(render)
            warm[name].append(elapsed)
    packed: dict[str, bytes] = {}
    zipped: dict[str, list[float]] = {name: [] for name in renderers}
    for _ in range(repeats):
        for name, body in bodies.items():
            elapsed, packed[name] = _ms(lambda body=body: gzip.compress(body, compresslevel=9))
            zipped[name].append(elapsed)
    result: dict[str, Any] = {}
    for name, body in bodies.items():
        render_ms, gzip_ms = statistics.median(warm[name]), statistics.median(zipped[name])
        result[name] = {
            "cold_render_ms": round(cold[name], 3),
            "render_ms": round(render_ms, 3),
            "gzip9_ms": round(gzip_ms, 3),
            "render_plus_gzip9_ms": round(render_ms + gzip_ms, 3),
            "bytes_plain": len(body),
            "bytes_gzip9": len(packed[name]),
            "sample_lines": sum(1 for ln in body.splitlines() if ln and not ln.startswith(b"#")),
        }
    return result


def run(repeats: int) -> dict[str, Any]:
    sets = label_sets()
    registry = populate_prometheus_client(sets)
    renderers: dict[str, Callable[[], bytes]] = {
        "generate_latest": lambda: generate_latest(registry),
        # Without the 10,000 *_created lines: a like-for-like line count with renderers that
        # do not emit them.
        "generate_latest_no_created": lambda: _without_created(registry),
    }
    ours = render_ours(sets)
    if ours is not None:
        renderers["ours"] = ours
    result: dict[str, Any] = {"params": {"label_sets": len(sets), "repeats": repeats,
                                         "timing": "process CPU time, renderers interleaved"}}
    result.update(_measure(renderers, repeats))
    if ours is None:
        result["ours"] = {"status": "skipped", "reason": "asgi_metrics renderer not available"}
    else:
        speedup = result["generate_latest"]["render_ms"] / result["ours"]["render_ms"]
        result["ours"]["speedup_vs_generate_latest"] = round(speedup, 2)
        # Same data in, same samples out: otherwise the speed-up compares different work.
        expected = result["generate_latest_no_created"]["sample_lines"]
        got = result["ours"]["sample_lines"]
        result["ours"]["same_samples"] = (
            "ok" if got == expected else f"MISMATCH: {got} sample lines, expected {expected}"
        )
    return result

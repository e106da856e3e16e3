"""Standalone: what native histograms cost the single-process store itself, native on vs
off, interleaved: ``observe`` per call (one series, latencies drawn from a log-normal
distribution) and ``snapshot`` of 1,000 series (what a scrape sums before rendering), each
series with ~40 native buckets.

Run from the repository root: ``python -m benchmarks.native_store_quick`` (either venv).
The per-request cost of the whole middleware, native on vs off, is the "native
histograms" option row of the in-process ASGI and Flask runs (``python -m benchmarks``).
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time

from asgi_metrics.core.settings import DEFAULT_BUCKETS, DEFAULT_SIZE_BUCKETS
from asgi_metrics.core.store import NativeRequestStore, RequestStore

CALLS = 20_000
ROUNDS = 21
SERIES = 1_000
PER_SERIES = 200


def _values(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(-3.0, 1.0) for _ in range(n)]


def observe_us(store: RequestStore, values: list[float]) -> float:
    key = ("GET", "/items/{id}", "200")
    observe = store.observe
    gc.collect()
    start = time.process_time()
    for value in values:
        observe(key, value, None)
    return (time.process_time() - start) / len(values) * 1e6


def filled(cls: type[RequestStore]) -> RequestStore:
    store = cls(DEFAULT_BUCKETS, DEFAULT_SIZE_BUCKETS, max_label_sets=SERIES + 10)
    values = _values(PER_SERIES, 1)
    for i in range(SERIES):
        key = ("GET", f"/r{i}", "200")
        for value in values:
            store.observe(key, value, None)
    return store


def snapshot_ms(store: RequestStore) -> float:
    gc.collect()
    start = time.process_time()
    store.snapshot()
    return (time.process_time() - start) * 1e3


def main() -> int:
    values = _values(CALLS, 2)
    stores = {"classic": RequestStore, "native": NativeRequestStore}
    observe: dict[str, list[float]] = {name: [] for name in stores}
    snap: dict[str, list[float]] = {name: [] for name in stores}
    full = {name: filled(cls) for name, cls in stores.items()}
    for round_index in range(ROUNDS):
        order = list(stores.items())
        random.Random(round_index).shuffle(order)
        for name, cls in order:
            observe[name].append(observe_us(cls(DEFAULT_BUCKETS, DEFAULT_SIZE_BUCKETS), values))
            snap[name].append(snapshot_ms(full[name]))
    paired = statistics.median(n - c for n, c in zip(observe["native"], observe["classic"],
                                                     strict=True))
    buckets = statistics.mean(
        len(s.positive) for s in full["native"].snapshot().native["requests"].values()
    )
    print(f"Python {sys.version.split()[0]}, {CALLS} calls x {ROUNDS} interleaved rounds")
    for name in stores:
        print(f"  {name:8} observe {statistics.median(observe[name]):.3f} us/call, "
              f"snapshot of {SERIES} series {statistics.median(snap[name]):.2f} ms")
    print(f"  native adds {paired:.3f} us per observe (paired median);"
          f" {buckets:.0f} native buckets per series")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

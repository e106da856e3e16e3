"""Scrape size and render time of 1,000 native histogram series: the protobuf exposition
(native fields and classic buckets in one message, what Prometheus with native histograms
scrapes) against the classic form in the text format (what it scrapes without).

1,000 duration series (200 routes x 5 statuses, default buckets), 200 observations each
drawn from a log-normal distribution (median 50 ms), native schema 3 (bucket factor
2**(1/8) ~ 1.09, what client_golang's default factor 1.1 gives). Renderings run interleaved
in rounds; reported are the medians, and sizes plain and gzipped (level 1, as served).

    python benchmarks/native_scrape.py [rounds]
"""

from __future__ import annotations

import gzip
import math
import random
import statistics
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from asgi_metrics.core.naming import metric_names  # noqa: E402
from asgi_metrics.core.native import NativeSeries  # noqa: E402
from asgi_metrics.core.settings import DEFAULT_BUCKETS, Settings  # noqa: E402
from asgi_metrics.core.store import Snapshot  # noqa: E402
from asgi_metrics.exposition.protobuf import ProtobufStoreRenderer  # noqa: E402
from asgi_metrics.exposition.render import StoreRenderer  # noqa: E402

SCHEMA = 3
SERIES = 1000
OBSERVATIONS = 200


def snapshot(native: bool) -> Snapshot:
    rng = random.Random(15)
    requests: dict[Any, list[float]] = {}
    states: dict[Any, NativeSeries] = {}
    for number in range(SERIES):
        key = ("GET", f"/api/v1/resource{number // 5}/{{item_id}}", str(200 + number % 5))
        series = [0.0] * (len(DEFAULT_BUCKETS) + 2)
        state = NativeSeries(SCHEMA, 2.0**-128, 0, 0, 0.0, {})
        for _ in range(OBSERVATIONS):
            value = rng.lognormvariate(math.log(0.05), 1.0)
            series[0] += value
            series[1 + sum(bound < value for bound in DEFAULT_BUCKETS)] += 1
            index = math.ceil(math.log2(value) * 2**SCHEMA)
            state.positive[index] = state.positive.get(index, 0) + 1
            state.count += 1
            state.sum += value
        requests[key] = series
        states[key] = state
    return Snapshot(requests=requests, native={"requests": states} if native else {})


def main(rounds: int = 15) -> None:
    names = metric_names(Settings.build({}, environ={}))
    text = StoreRenderer(names, {}, DEFAULT_BUCKETS, DEFAULT_BUCKETS)
    proto = ProtobufStoreRenderer(names, {}, DEFAULT_BUCKETS, DEFAULT_BUCKETS)
    classic, native = snapshot(False), snapshot(True)
    variants = {
        "text, classic (today)": lambda: text.render(classic, False).encode(),
        "protobuf, classic only": lambda: proto.render(classic),
        "protobuf, native + classic": lambda: proto.render(native),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    bodies = {name: render() for name, render in variants.items()}  # warm the caches
    for _ in range(rounds):
        for name, render in variants.items():
            start = perf_counter()
            render()
            times[name].append(perf_counter() - start)
    buckets = statistics.median(len(s.positive) for s in native.native["requests"].values())
    print(f"{SERIES} series, {OBSERVATIONS} observations each, schema {SCHEMA}:"
          f" median {buckets:g} native buckets per series; {rounds} rounds")
    base = statistics.median(times["text, classic (today)"])
    base_size = len(bodies["text, classic (today)"])
    print(f"{'variant':28} {'render ms':>10} {'x text':>7} {'bytes':>9} {'x text':>7}"
          f" {'gzip bytes':>11}")
    for name, body in bodies.items():
        median = statistics.median(times[name])
        print(f"{name:28} {median * 1e3:10.2f} {median / base:7.2f} {len(body):9d}"
              f" {len(body) / base_size:7.2f} {len(gzip.compress(body, 1)):11d}")


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))

"""The single-process store's native histograms (``NativeRequestStore``): the same
requests as the classic series, per-series halving, shards of different schemas summed,
exact totals with many threads recording while scrapes read, and the classic numbers
identical to the classic store's."""

from __future__ import annotations

import math
import random
import sys
import threading
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from asgi_metrics import MetricsMiddleware
from asgi_metrics.core.native import NativeSeries, bucket_index
from asgi_metrics.core.settings import ConfigurationError, Settings
from asgi_metrics.core.store import NativeRequestStore, RequestStore, Snapshot

KEY = ("GET", "/items/{id}", "200")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SIZES = (100.0, 1000.0, 10000.0)


def expected(values: list[float], schema: int, threshold: float = 2.0**-128) -> NativeSeries:
    """The native series of ``values`` counted from scratch at ``schema``."""
    positive: dict[int, int] = {}
    zero = 0
    for value in values:
        if value <= threshold:
            zero += 1
            continue
        index = bucket_index(value, schema)
        positive[index] = positive.get(index, 0) + 1
    return NativeSeries(schema, threshold, zero, len(values), math.fsum(values), positive)


def assert_same(got: NativeSeries, want: NativeSeries) -> None:
    assert (got.schema, got.zero_threshold, got.zero_count, got.count, got.positive) == (
        want.schema, want.zero_threshold, want.zero_count, want.count, want.positive
    )
    assert math.isclose(got.sum, want.sum, rel_tol=1e-9)


def assert_agrees(snapshot: Snapshot, table: str = "requests") -> None:
    """Every native series counts what its classic series counts."""
    classic = getattr(snapshot, table)
    natives = snapshot.native.get(table, {})
    assert set(natives) == set(classic)
    for key, series in natives.items():
        assert series.count == int(sum(classic[key][1:]))
        assert series.zero_count + sum(series.positive.values()) == series.count
        assert series.sum == classic[key][0]


def test_native_series_counts_the_same_requests_as_the_classic() -> None:
    store = NativeRequestStore(BUCKETS, SIZES)
    rng = random.Random(1)
    values = [rng.lognormvariate(-3, 1) for _ in range(5000)] + [0.0, 2.0**-130]
    for value in values:
        store.observe(KEY, value)
    snapshot = store.snapshot()
    assert_agrees(snapshot)
    assert_same(snapshot.native["requests"][KEY], expected(values, 3))
    assert snapshot.native["requests"][KEY].zero_count == 2


def test_bucket_factor_and_zero_threshold_are_used() -> None:
    store = NativeRequestStore(BUCKETS, SIZES, bucket_factor=2.0, zero_threshold=0.001)
    values = [0.0005, 0.001, 0.0011, 0.3, 7.0]
    for value in values:
        store.observe(KEY, value)
    assert_same(store.snapshot().native["requests"][KEY], expected(values, 0, 0.001))


def test_infinity_and_nan_keep_the_counts_equal() -> None:
    store = NativeRequestStore(BUCKETS, SIZES)
    for value in (0.1, math.inf, math.nan):
        store.observe(KEY, value)
    series = store.snapshot().native["requests"][KEY]
    assert series.count == 3
    assert series.positive[bucket_index(math.inf, 3)] == 1
    assert series.zero_count == 1  # the NaN


def test_a_series_past_the_cap_halves_its_resolution() -> None:
    store = NativeRequestStore(BUCKETS, SIZES, max_buckets=10)
    rng = random.Random(2)
    values = [math.exp(rng.uniform(-9, 4)) for _ in range(3000)]
    for value in values:
        store.observe(KEY, value)
    series = store.snapshot().native["requests"][KEY]
    assert len(series.positive) <= 10
    assert series.schema < 3
    # Halving merged the buckets exactly: the same as counting at the final schema.
    assert_same(series, expected(values, series.schema))
    # One step finer would not fit: the store halved no further than it had to.
    assert len(expected(values, series.schema + 1).positive) > 10


def test_optional_histograms_have_native_forms() -> None:
    store = NativeRequestStore(BUCKETS, SIZES)
    store.observe(KEY, 0.2)
    store.observe_extra(KEY, 0.05, 512, None)
    store.observe_extra(KEY, 0.07, None, 4096)
    snapshot = store.snapshot()
    assert_same(snapshot.native["ttfb"][KEY], expected([0.05, 0.07], 3))
    assert_same(snapshot.native["request_size"][KEY], expected([512.0], 3))
    assert_same(snapshot.native["response_size"][KEY], expected([4096.0], 3))
    for table in ("requests", "ttfb", "request_size", "response_size"):
        assert_agrees(snapshot, table)


def _in_thread(target: Any) -> None:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


def test_shards_of_different_schemas_sum_at_the_smallest() -> None:
    store = NativeRequestStore(BUCKETS, SIZES, max_buckets=20)
    rng = random.Random(4)
    wide = [math.exp(rng.uniform(-9, 4)) for _ in range(2000)]  # halves, in its shard
    narrow = [rng.uniform(0.01, 0.012) for _ in range(2000)]  # stays at schema 3
    alive = threading.Event()
    done = threading.Event()

    def live_writer() -> None:  # a live shard: its thread still runs at the scrape
        for value in narrow:
            store.observe(KEY, value)
        alive.set()
        done.wait(10)

    thread = threading.Thread(target=live_writer)
    thread.start()
    try:
        alive.wait(10)
        _in_thread(lambda: [store.observe(KEY, value) for value in wide])  # ends: retired
        series = store.snapshot().native["requests"][KEY]
    finally:
        done.set()
        thread.join()
    assert len(series.positive) <= 20
    assert_same(series, expected(wide + narrow, series.schema))


def test_the_cap_holds_after_summing_shards() -> None:
    store = NativeRequestStore(BUCKETS, SIZES, max_buckets=8)
    low = [1.0 + (i + 1) / 101 for i in range(100)]  # 8 buckets at schema 3
    high = [1024.0 + (i + 1) * 10 for i in range(100)]  # 8 other buckets
    _in_thread(lambda: [store.observe(KEY, value) for value in low])
    _in_thread(lambda: [store.observe(KEY, value) for value in high])
    for value in low[:10]:  # and a live shard of this thread
        store.observe(KEY, value)
    series = store.snapshot().native["requests"][KEY]
    assert series.schema == 2 and len(series.positive) == 8
    assert_same(series, expected(low + high + low[:10], 2))


@pytest.fixture
def frequent_switches() -> Any:
    """Threads switch every microsecond (not every 5 ms), so a scrape often lands in the
    middle of a request being recorded."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_switches")
def test_many_threads_exact_totals_and_every_scrape_consistent() -> None:
    store = NativeRequestStore(BUCKETS, SIZES, max_buckets=30)
    threads, per_thread = 8, 4000
    keys = [("GET", f"/r{i}", "200") for i in range(3)]
    start = threading.Barrier(threads + 1)
    values_by_thread: list[list[float]] = []
    for t in range(threads):
        rng = random.Random(100 + t)
        # Some threads spread wide enough to halve, the others do not.
        spread = 12 if t % 2 else 3
        values_by_thread.append(
            [math.exp(rng.uniform(-7, -7 + spread)) for _ in range(per_thread)]
        )

    def writer(values: list[float]) -> None:
        start.wait()
        for i, value in enumerate(values):
            store.observe(keys[i % 3], value, None)
            if i % 7 == 0:
                store.observe_extra(keys[i % 3], value / 2, i, None)

    workers = [threading.Thread(target=writer, args=(v,)) for v in values_by_thread]
    for worker in workers:
        worker.start()
    start.wait()
    scrapes = 0
    while any(worker.is_alive() for worker in workers) and scrapes < 500:
        snapshot = store.snapshot()  # while the writers write: never a mismatch
        assert_agrees(snapshot)
        assert_agrees(snapshot, "ttfb")
        scrapes += 1
    for worker in workers:
        worker.join()
    assert scrapes > 0
    snapshot = store.snapshot()
    assert_agrees(snapshot)
    everything: dict[tuple[str, str, str], list[float]] = {key: [] for key in keys}
    for values in values_by_thread:
        for i, value in enumerate(values):
            everything[keys[i % 3]].append(value)
    for key in keys:
        got = snapshot.native["requests"][key]
        assert got.count == len(everything[key])
        assert len(got.positive) <= 30
        assert_same(got, expected(everything[key], got.schema))


def _feed(store: RequestStore) -> None:
    rng = random.Random(9)
    for i in range(2000):
        key = ("GET", f"/r{i % 50}", "200")
        store.start("GET")
        store.observe(key, rng.expovariate(5), "GET" if i % 3 else None,
                      (i, i + 1) if i % 5 == 0 else None)
        store.observe_extra(key, rng.expovariate(50), i, 2 * i if i % 2 else None)
        if i % 11 == 0:
            store.count_exception(("GET", f"/r{i % 50}", "ValueError"))


def test_classic_numbers_are_the_classic_stores() -> None:
    # NativeRequestStore records the classic series in its own body (no second call per
    # request): what it records there must stay exactly RequestStore's, over the label
    # cap too (max_label_sets=20 < 50 routes).
    classic, with_native = (
        RequestStore(BUCKETS, SIZES, max_label_sets=20),
        NativeRequestStore(BUCKETS, SIZES, max_label_sets=20),
    )
    _feed(classic)
    _feed(with_native)
    a, b = classic.snapshot(), with_native.snapshot()
    for name in ("requests", "ttfb", "request_size", "response_size", "in_flight",
                 "exceptions"):
        assert getattr(a, name) == getattr(b, name), name
    assert {k: [s and s[:3] for s in v] for k, v in a.exemplars.items()} == {
        k: [s and s[:3] for s in v] for k, v in b.exemplars.items()
    }
    assert a.native == {}
    assert set(b.native["requests"]) == set(b.requests)  # the overflow series too
    assert_agrees(b)


def test_settings() -> None:
    settings = Settings.build({}, environ={
        "HTTP_METRICS_NATIVE_HISTOGRAMS": "true",
        "HTTP_METRICS_NATIVE_HISTOGRAM_BUCKET_FACTOR": "1.05",
        "HTTP_METRICS_NATIVE_HISTOGRAM_MAX_BUCKETS": "100",
        "HTTP_METRICS_NATIVE_HISTOGRAM_ZERO_THRESHOLD": "0",
    })
    assert settings.native_histograms is True
    assert settings.native_histogram_bucket_factor == 1.05
    assert settings.native_histogram_max_buckets == 100
    assert settings.native_histogram_zero_threshold == 0.0
    defaults = Settings.build({}, environ={})
    assert defaults.native_histograms is False
    assert defaults.native_histogram_bucket_factor == 1.1
    assert defaults.native_histogram_max_buckets == 160
    assert defaults.native_histogram_zero_threshold == 2.0**-128


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("native_histogram_bucket_factor", 1.0),
        ("native_histogram_bucket_factor", 0.5),
        ("native_histogram_bucket_factor", math.nan),
        ("native_histogram_bucket_factor", math.inf),
        ("native_histogram_bucket_factor", True),
        ("native_histogram_bucket_factor", "1.1"),
        ("native_histogram_max_buckets", 0),
        ("native_histogram_max_buckets", 1.5),
        ("native_histogram_zero_threshold", -1e-9),
        ("native_histogram_zero_threshold", math.nan),
        ("native_histograms", 1),
    ],
)
def test_wrong_settings_are_refused(name: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.build({name: value}, environ={})


def test_environment_form_of_a_wrong_number_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="NATIVE_HISTOGRAM_BUCKET_FACTOR"):
        Settings.build({}, environ={"HTTP_METRICS_NATIVE_HISTOGRAM_BUCKET_FACTOR": "big"})


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("on", [False, True])
@pytest.mark.anyio
async def test_the_middleware_records_native_histograms_only_when_asked(on: bool) -> None:
    app = MetricsMiddleware(_ok, registry=CollectorRegistry(), native_histograms=on,
                            native_histogram_bucket_factor=1.5)
    store = app.recorder.store
    assert isinstance(store, NativeRequestStore) is on
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(5):
            assert (await client.get("/a")).status_code == 200
    snapshot = store.snapshot()  # type: ignore[attr-defined]
    if not on:
        assert snapshot.native == {}
        return
    (key,) = snapshot.requests
    series = snapshot.native["requests"][key]
    assert series.schema == 1 and series.count == 5
    assert_agrees(snapshot)

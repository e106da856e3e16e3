"""The label-set cap (``max_label_sets``): what it folds into the overflow series, for a
resolver returning raw paths, across threads, for exemplars; its validation. The floods
that reach it under load: tests/e2e/test_hardening_flood.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from asgi_metrics import MetricsMiddleware
from tests.support.apps.odd_status import odd_status_app
from tests.support.asgi import call_asgi, fetch_metrics, uvicorn_scope
from tests.support.scrape import series_of


def test_cap_holds_for_a_resolver_returning_raw_paths(caplog: pytest.LogCaptureFixture) -> None:
    """The misconfiguration the cap exists for: raw paths as route labels."""
    registry = CollectorRegistry()
    app = MetricsMiddleware(
        odd_status_app, registry=registry, max_label_sets=50, time_to_first_byte=True,
        route_resolver=lambda scope: scope["path"] + scope["query_string"].decode(),
    )
    caplog.set_level(logging.WARNING, logger="asgi_metrics")

    async def flood() -> None:
        for index in range(1_000):
            _sent, exc = await call_asgi(
                app, uvicorn_scope("/200", query_string=str(index).encode())
            )
            assert exc is None

    asyncio.run(flood())
    _, text = asyncio.run(fetch_metrics(app))
    for family in (
        "http_requests_total",
        "http_request_duration_seconds_count",
        "http_request_time_to_first_byte_seconds_count",
    ):
        series = series_of(text, family)
        assert len(series) == 50, family
        assert sum(series.values()) == 1_000
    assert app.recorder.store.label_set_count("requests") == 50
    warnings = [r for r in caplog.records if "max_label_sets" in r.getMessage()]
    assert len(warnings) == 2  # the request families, then the ttfb family: once each


def test_cap_is_shared_by_all_threads() -> None:
    """Distinct keys are counted across shards, not per thread."""
    import threading

    from asgi_metrics.core.label_cap import OVERFLOW_KEY
    from asgi_metrics.core.store import RequestStore

    store = RequestStore((0.1, 1.0), (10.0,), max_label_sets=100)

    def writer(offset: int) -> None:
        for index in range(200):
            store.observe(("GET", f"/{offset}/{index}", "200"), 0.01)
            store.count_exception(("GET", f"/{offset}/{index}", "ValueError"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = store.snapshot()
    assert len(snap.requests) == 100
    assert len(snap.exceptions) == 100
    assert sum(sum(series[1:]) for series in snap.requests.values()) == 1_600
    assert sum(snap.exceptions.values()) == 1_600
    assert OVERFLOW_KEY in snap.requests


@pytest.mark.parametrize("value", [0, 1, -5, True, "many", 2.5])
def test_max_label_sets_is_validated(value: object) -> None:
    from asgi_metrics import ConfigurationError, Settings

    with pytest.raises(ConfigurationError, match="max_label_sets"):
        Settings.build({"max_label_sets": value}, {})


def test_max_label_sets_from_environment() -> None:
    from asgi_metrics import ConfigurationError, Settings

    assert Settings.build({}, {"HTTP_METRICS_MAX_LABEL_SETS": "300"}).max_label_sets == 300
    with pytest.raises(ConfigurationError, match="HTTP_METRICS_MAX_LABEL_SETS"):
        Settings.build({}, {"HTTP_METRICS_MAX_LABEL_SETS": "lots"})


def test_exemplars_follow_the_cap() -> None:
    from asgi_metrics.core.label_cap import OVERFLOW_KEY
    from asgi_metrics.core.store import RequestStore

    store = RequestStore((0.1, 1.0), (10.0,), max_label_sets=10)
    for index in range(100):
        key = ("GET", f"/{index}", "200")
        store.observe(key, 0.01, None, (index + 1, index + 1))
    snap = store.snapshot()
    assert len(snap.requests) == 10
    assert set(snap.exemplars) <= set(snap.requests)
    assert OVERFLOW_KEY in snap.exemplars

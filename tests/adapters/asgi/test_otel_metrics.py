"""The OpenTelemetry metrics bridge: semantic-convention instruments seen by the SDK."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_metrics import ConfigurationError, MetricsMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def item(request: Request) -> Response:
    return PlainTextResponse("x")


async def fail(request: Request) -> Response:
    raise KeyError("nope")


async def teapot(request: Request) -> Response:
    return PlainTextResponse("busy", status_code=503)


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = [metric, *metric.data.data_points]
    return found


async def test_semantic_convention_instruments() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    app = Starlette(routes=[
        Route("/items/{item_id}", item), Route("/fail", fail), Route("/busy", teapot),
    ])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), meter_provider=provider)
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for item_id in (1, 2, 3):
            assert (await client.get(f"/items/{item_id}")).status_code == 200
        assert (await client.get("/fail")).status_code == 500
        assert (await client.get("/busy")).status_code == 503
        assert (await client.post("/nowhere")).status_code == 404

    found = points(reader)
    duration, *duration_points = found["http.server.request.duration"]
    assert duration.unit == "s"
    by_attrs = {frozenset(p.attributes.items()): p for p in duration_points}
    base = {("http.request.method", "GET"), ("url.scheme", "http")}
    ok = by_attrs[frozenset(base | {("http.route", "/items/{item_id}"),
                                    ("http.response.status_code", 200)})]
    assert ok.count == 3 and ok.sum > 0
    assert by_attrs[frozenset(base | {("http.route", "/fail"), ("http.response.status_code", 500),
                                      ("error.type", "KeyError")})].count == 1
    assert by_attrs[frozenset(base | {("http.route", "/busy"), ("http.response.status_code", 503),
                                      ("error.type", "503")})].count == 1
    # Unmatched: no http.route attribute at all (never a raw path, never a made-up value).
    assert by_attrs[frozenset({("http.request.method", "POST"), ("url.scheme", "http"),
                               ("http.response.status_code", 404)})].count == 1
    assert len(duration_points) == 4
    # Bucket advice: the same bounds as the Prometheus histogram.
    assert list(ok.explicit_bounds)[:3] == [0.005, 0.01, 0.025]

    active, *active_points = found["http.server.active_requests"]
    assert active.unit == "{request}"
    assert {frozenset(p.attributes.items()): p.value for p in active_points} == {
        frozenset(base): 0,
        frozenset({("http.request.method", "POST"), ("url.scheme", "http")}): 0,
    }


async def test_active_requests_counts_while_in_flight() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    seen: list[int] = []

    async def slow(request: Request) -> Response:
        [_, point] = points(reader)["http.server.active_requests"]
        seen.append(point.value)
        return PlainTextResponse("x")

    app = Starlette(routes=[Route("/slow", slow)])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), meter_provider=provider)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/slow")
    assert seen == [1]


def test_off_by_default_and_bad_provider_named() -> None:
    from asgi_metrics import Settings

    settings = Settings.build({}, environ={})
    assert settings.meter_provider is None and settings.otel_metrics is False
    with pytest.raises(ConfigurationError, match="meter_provider"):
        Settings.build({"meter_provider": object()}, environ={})
    with pytest.raises(ConfigurationError, match="HTTP_METRICS_METER_PROVIDER"):
        Settings.build({}, environ={"HTTP_METRICS_METER_PROVIDER": "x"})
    assert Settings.build({}, environ={"HTTP_METRICS_OTEL_METRICS": "true"}).otel_metrics


def test_global_provider_setting() -> None:
    from asgi_metrics.otel.metrics import OtelMetrics

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError

    middleware = MetricsMiddleware(app, registry=CollectorRegistry(), otel_metrics=True)
    assert isinstance(middleware.recorder.otel, OtelMetrics)
    assert MetricsMiddleware(app, registry=CollectorRegistry()).recorder.otel is None

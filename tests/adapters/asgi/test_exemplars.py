"""Exemplars: a sampled server span's IDs on the duration bucket and the request counter."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware, get_correlation_id
from tests.support.otel import SPAN_FAILURES, broken_span

pytestmark = pytest.mark.anyio
OPENMETRICS = {"Accept": "application/openmetrics-text; version=1.0.0"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def hello(request: Request) -> Response:
    return PlainTextResponse(get_correlation_id() or "-")


def build(sampler: Any = ALWAYS_ON, **options: Any) -> tuple[Any, InMemorySpanExporter, Any]:
    """Starlette app with our middleware, wrapped by OpenTelemetry's ASGI middleware
    (outermost, as FastAPIInstrumentor also places it)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), **options)
    return OpenTelemetryMiddleware(app, tracer_provider=provider), exporter, app


async def get(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


def server_span(exporter: InMemorySpanExporter) -> Any:
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    return span


def parse(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_sampled_span_gives_exemplar_on_bucket_and_counter() -> None:
    app, exporter, _ = build()
    assert (await get(app, "/hello")).status_code == 200
    span = server_span(exporter)
    trace_id = format(span.context.trace_id, "032x")
    span_id = format(span.context.span_id, "016x")
    body = (await get(app, "/metrics", OPENMETRICS)).text
    families = parse(body)  # must parse with prometheus_client's OpenMetrics parser

    with_exemplar = [
        s for s in families["http_request_duration_seconds"].samples if s.exemplar is not None
    ]
    [bucket] = with_exemplar
    assert bucket.name == "http_request_duration_seconds_bucket"
    assert bucket.exemplar.labels == {"trace_id": trace_id, "span_id": span_id}
    # The exemplar sits on the first bucket its value fits in.
    le = float(bucket.labels["le"])
    assert bucket.exemplar.value <= le
    lower = [float(s.labels["le"]) for s in families["http_request_duration_seconds"].samples
             if s.name.endswith("_bucket") and float(s.labels["le"]) < le]
    assert all(bucket.exemplar.value > bound for bound in lower)
    assert bucket.exemplar.timestamp is not None

    [total] = [s for s in families["http_requests"].samples
               if s.labels["route"] == "/hello"]
    assert total.exemplar is not None and total.exemplar.labels["trace_id"] == trace_id
    # The raw line has the documented shape, within the 128-character label limit.
    line = next(x for x in body.splitlines() if "# {" in x and "_bucket" in x)
    assert re.fullmatch(
        r'http_request_duration_seconds_bucket\{.*\} \d+\.0 # '
        r'\{trace_id="[0-9a-f]{32}",span_id="[0-9a-f]{16}"\} \S+ \d+\.\d{3}', line
    )
    assert len(f"trace_id{trace_id}span_id{span_id}") <= 128


async def test_latest_exemplar_wins_and_text_format_has_none() -> None:
    app, exporter, _ = build()
    await get(app, "/hello")
    await get(app, "/hello")
    spans = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    latest = format(spans[-1].context.trace_id, "032x")
    families = parse((await get(app, "/metrics", OPENMETRICS)).text)
    [total] = [s for s in families["http_requests"].samples if s.labels["route"] == "/hello"]
    assert total.value == 2 and total.exemplar.labels["trace_id"] == latest
    text = (await get(app, "/metrics")).text
    assert "trace_id" not in text and "# {" not in text


async def test_unsampled_span_gives_no_exemplar() -> None:
    app, _exporter, _ = build(sampler=ALWAYS_OFF)
    assert (await get(app, "/hello")).status_code == 200
    body = (await get(app, "/metrics", OPENMETRICS)).text
    assert "trace_id" not in body
    assert 'http_requests_total{method="GET",route="/hello",status="200"} 1.0' in body


async def test_no_span_no_exemplar_and_setting_off() -> None:
    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry())
    await get(app, "/hello")
    assert "trace_id" not in (await get(app, "/metrics", OPENMETRICS)).text

    off, _, _ = build(exemplars=False)
    await get(off, "/hello")
    assert "trace_id" not in (await get(off, "/metrics", OPENMETRICS)).text


async def test_incoming_traceparent_is_the_exemplar_trace() -> None:
    app, _, _ = build()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    await get(app, "/hello", {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert f'trace_id="{trace_id}"' in (await get(app, "/metrics", OPENMETRICS)).text


async def test_collector_attaches_exemplars() -> None:
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner = Starlette(routes=[Route("/hello", hello)])
    inner.add_middleware(MetricsMiddleware, registry=registry)
    app = OpenTelemetryMiddleware(inner, tracer_provider=provider)
    await get(app, "/hello")
    trace_id = format(server_span(exporter).context.trace_id, "032x")
    text = openmetrics_latest(registry).decode()
    families = parse(text)
    assert any(
        s.exemplar is not None and s.exemplar.labels["trace_id"] == trace_id
        for s in families["http_request_duration_seconds"].samples
    )
    assert any(s.exemplar is not None for s in families["http_requests"].samples)


async def test_correlation_id_span_attribute_and_trace_id_as_id() -> None:
    app, exporter, _ = build(correlation_id=True, trace_id_as_correlation_id=True)
    response = await get(app, "/hello")
    span = server_span(exporter)
    trace_id = format(span.context.trace_id, "032x")
    assert response.headers["x-request-id"] == trace_id == response.text
    assert span.attributes["correlation.id"] == trace_id
    # The same span, read once, is the exemplar too.
    assert f'trace_id="{trace_id}"' in (await get(app, "/metrics", OPENMETRICS)).text

    exporter.clear()
    response = await get(app, "/hello", {"X-Request-ID": "given-1"})
    assert response.headers["x-request-id"] == "given-1"
    assert server_span(exporter).attributes["correlation.id"] == "given-1"


async def test_trace_id_used_for_unsampled_span_too() -> None:
    app, _, _ = build(sampler=ALWAYS_OFF, correlation_id=True, trace_id_as_correlation_id=True)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    response = await get(app, "/hello", {"traceparent": f"00-{trace_id}-b7ad6b7169203331-00"})
    assert response.headers["x-request-id"] == trace_id


async def test_span_inside_our_middleware_still_gives_trace_exemplar() -> None:
    """OpenTelemetry's middleware *inside* ours: read at the end, within its trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner = OpenTelemetryMiddleware(
        Starlette(routes=[Route("/hello", hello)]), tracer_provider=provider
    )
    app = MetricsMiddleware(inner, registry=CollectorRegistry())
    await get(app, "/hello")
    trace_id = format(server_span(exporter).context.trace_id, "032x")
    assert f'trace_id="{trace_id}"' in (await get(app, "/metrics", OPENMETRICS)).text


async def test_correlation_id_attribute_when_otel_is_inside_ours() -> None:
    """Our middleware outermost: the span only exists inside; the ID still reaches it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner = OpenTelemetryMiddleware(
        Starlette(routes=[Route("/hello", hello)]), tracer_provider=provider
    )
    app = MetricsMiddleware(inner, registry=CollectorRegistry(), correlation_id=True)
    response = await get(app, "/hello", {"X-Request-ID": "inside-1"})
    assert response.headers["x-request-id"] == "inside-1"
    assert server_span(exporter).attributes["correlation.id"] == "inside-1"


async def test_correlation_id_attribute_on_excluded_paths() -> None:
    app, exporter, _ = build(correlation_id=True, exclude_paths=["/hello"])
    response = await get(app, "/hello")
    cid = response.headers["x-request-id"]
    assert response.text == cid and len(cid) == 32
    assert server_span(exporter).attributes["correlation.id"] == cid


@pytest.mark.parametrize("broken", SPAN_FAILURES)
async def test_span_failures_keep_the_id_and_the_count(
    broken: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The span is read as the request is recorded; when reading it or tagging it fails,
    the response keeps its correlation header and the request is still counted."""
    app = Starlette(routes=[Route("/hello", hello)])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), correlation_id=True)
    with broken_span(broken):
        for _ in range(3):
            response = await get(app, "/hello", {"X-Request-ID": "kept-1"})
            assert response.status_code == 200 and response.text == "kept-1"
            assert response.headers["x-request-id"] == "kept-1"
    metrics = parse((await get(app, "/metrics", OPENMETRICS)).text)
    [count] = [
        s.value for s in metrics["http_requests"].samples
        if s.name == "http_requests_total" and s.labels.get("route") == "/hello"
    ]
    assert count == 3
    failures = [r.getMessage() for r in caplog.records if r.name == "asgi_metrics"]
    assert len(failures) == 1 and failures[0].startswith(f"HTTP metrics: {broken} failed")


async def slow(request: Request) -> Response:
    await asyncio.sleep(0.02)
    return PlainTextResponse("slow")


@pytest.mark.parametrize("renderer", ["endpoint", "collector"])
async def test_counter_exemplar_carries_the_increment_buckets_the_duration(
    renderer: str,
) -> None:
    """As prometheus_client's Counter.inc(exemplar=...), client_golang and
    starlette_exporter do: the counter's exemplar value is the increment (1), the bucket's
    the observed duration. Both renderers: our endpoint's and the registry collector's."""
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    inner = Starlette(routes=[Route("/slow", slow)])
    inner.add_middleware(MetricsMiddleware, registry=registry)
    app = OpenTelemetryMiddleware(inner, tracer_provider=provider)
    assert (await get(app, "/slow")).status_code == 200
    trace_id = format(server_span(exporter).context.trace_id, "032x")
    if renderer == "endpoint":
        text = (await get(app, "/metrics", OPENMETRICS)).text
    else:
        text = openmetrics_latest(registry).decode()
    families = parse(text)

    [total] = [s for s in families["http_requests"].samples
               if s.name == "http_requests_total" and s.labels["route"] == "/slow"]
    assert total.value == 1.0
    assert total.exemplar is not None and total.exemplar.labels["trace_id"] == trace_id
    assert total.exemplar.value == 1.0

    duration = families["http_request_duration_seconds"].samples
    [observed] = [s.value for s in duration
                  if s.name == "http_request_duration_seconds_sum"
                  and s.labels["route"] == "/slow"]
    assert observed >= 0.02
    [bucket] = [s for s in duration if s.exemplar is not None]
    assert bucket.exemplar.labels["trace_id"] == trace_id
    assert bucket.exemplar.value == observed  # the one observation: the request's duration

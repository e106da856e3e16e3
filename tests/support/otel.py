"""OpenTelemetry in tests: spans that fail on purpose, and the HTTP metrics an SDK reader
collected."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

#: The span failures the middlewares survive (what each logs as its failure kind).
SPAN_FAILURES = ("span lookup", "setting the correlation ID span attribute")


@contextlib.contextmanager
def broken_span(broken: str) -> Iterator[None]:
    """Make the current span (through OpenTelemetry's public context API) one whose read
    fails as ``broken`` says: reading its context raises ("span lookup"), or it is a real
    sampled SDK span whose ``set_attribute`` raises."""
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider

    def fail(*args: Any) -> Any:
        raise RuntimeError("injected")

    span: Any
    if broken == "span lookup":
        span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        span.get_span_context = fail
    else:
        span = TracerProvider().get_tracer("test").start_span("server")
        span.set_attribute = fail
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)


OtelPoints = dict[frozenset[tuple[str, Any]], Any]


def otel_http_points(reader: Any) -> tuple[OtelPoints, OtelPoints]:
    """From an OpenTelemetry ``InMemoryMetricReader``: the request count per attribute set of
    ``http.server.request.duration``, and the value per attribute set of
    ``http.server.active_requests``."""
    data = reader.get_metrics_data()
    assert data is not None
    found = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    counts = {frozenset(p.attributes.items()): p.count
              for p in found["http.server.request.duration"].data.data_points}
    active = {frozenset(p.attributes.items()): p.value
              for p in found["http.server.active_requests"].data.data_points}
    return counts, active

"""Correlation IDs, exemplars and OpenTelemetry metrics together.

Run with ``uvicorn example_apps.otel_app.app:app --host 127.0.0.1 --port 8000`` and scrape
``/metrics`` with ``Accept: application/openmetrics-text`` to see the exemplars.
"""

from __future__ import annotations

import logging

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_metrics import CorrelationIdFilter, MetricsMiddleware, get_correlation_id

handler = logging.StreamHandler()
handler.addFilter(CorrelationIdFilter())
handler.setFormatter(
    logging.Formatter("%(asctime)s %(levelname)s [%(correlation_id)s] %(name)s: %(message)s")
)
logging.basicConfig(level=logging.INFO, handlers=[handler])
log = logging.getLogger("example")

# Your SDK setup: sampler, exporter (OTLP to a collector, ...). Every span is sampled here.
tracer_provider = TracerProvider()


async def order(request: Request) -> JSONResponse:
    log.info("looking up order %s", request.path_params["order_id"])
    return JSONResponse({"order": request.path_params["order_id"], "id": get_correlation_id()})


starlette_app = Starlette(routes=[Route("/orders/{order_id}", order)])
starlette_app.add_middleware(
    MetricsMiddleware, correlation_id=True, trace_id_as_correlation_id=True
)
# OpenTelemetry's middleware outermost, so its server span is active in ours.
app = OpenTelemetryMiddleware(starlette_app, tracer_provider=tracer_provider)

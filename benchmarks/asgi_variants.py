"""The ASGI apps under test: a bare Starlette app, ours, and each peer, built the way users do.

Every builder takes the number of extra routes placed *before* the hit route (so routing cost
grows for everybody) and returns a ready ASGI app. A builder raises ImportError when its
package is missing; the suite then reports the variant as skipped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from benchmarks._harness import registry_kwargs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HIT_PATH = "/users/42"
HIT_BODY = b"user 42"


async def _user(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"user {request.path_params['user_id']}")


async def _extra(request: Request) -> PlainTextResponse:
    return PlainTextResponse("extra")


def make_starlette(extra_routes: int = 0) -> Starlette:
    """Starlette app with ``extra_routes`` parameterised routes, then ``GET /users/{user_id}``."""
    routes = [Route(f"/extra{i}/{{item_id}}", _extra) for i in range(extra_routes)]
    routes.append(Route("/users/{user_id}", _user, methods=["GET"]))
    return Starlette(routes=routes)


def build_bare(extra_routes: int = 0) -> ASGIApp:
    return make_starlette(extra_routes)


def build_ours(extra_routes: int = 0) -> ASGIApp:
    from asgi_metrics import MetricsMiddleware

    app = make_starlette(extra_routes)
    app.add_middleware(MetricsMiddleware, **registry_kwargs(MetricsMiddleware))
    return app


class NoopMiddleware:
    """A pure ASGI middleware that only passes the call on: what one more layer costs.

    The reference row: no middleware can add less than this, so (ours - this) is what our
    own work costs on top of being a layer at all.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build_noop(extra_routes: int = 0) -> ASGIApp:
    app = make_starlette(extra_routes)
    app.add_middleware(NoopMiddleware)
    return app


def build_instrumentator(extra_routes: int = 0) -> ASGIApp:
    from prometheus_fastapi_instrumentator import Instrumentator

    app = make_starlette(extra_routes)
    Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


def build_starlette_exporter(extra_routes: int = 0) -> ASGIApp:
    # No registry option: metrics live in a class-level dict on the default registry. Its
    # default prefix registers starlette_requests_total, the very name starlette-prometheus
    # registers at import, so the two cannot share a process unless one is renamed.
    from starlette_exporter import PrometheusMiddleware

    app = make_starlette(extra_routes)
    app.add_middleware(PrometheusMiddleware, group_paths=True, prefix="starlette_exporter")
    return app


def build_starlette_prometheus(extra_routes: int = 0) -> ASGIApp:
    # Module-level metrics on the default registry; BaseHTTPMiddleware underneath.
    from starlette_prometheus import PrometheusMiddleware

    app = make_starlette(extra_routes)
    app.add_middleware(PrometheusMiddleware)
    return app


def build_otel(extra_routes: int = 0) -> ASGIApp:
    """OpenTelemetry as typically configured, minus the network: SDK providers, in-memory
    metric reader, tracer provider without span processors."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    app = make_starlette(extra_routes)
    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )
    return app


def build_ours_correlation(extra_routes: int = 0) -> ASGIApp:
    """Ours with correlation IDs on (no incoming header: each request generates one)."""
    from asgi_metrics import MetricsMiddleware

    app = make_starlette(extra_routes)
    app.add_middleware(
        MetricsMiddleware, correlation_id=True, **registry_kwargs(MetricsMiddleware)
    )
    return app


def build_ours_label(extra_routes: int = 0) -> ASGIApp:
    """Ours with one request-derived label read from a header the request has."""
    from asgi_metrics import MetricsMiddleware, from_header

    app = make_starlette(extra_routes)
    app.add_middleware(
        MetricsMiddleware, labels={"tenant": from_header("X-Tenant")},
        **registry_kwargs(MetricsMiddleware),
    )
    return app


def build_ours_native(extra_routes: int = 0) -> ASGIApp:
    """Ours with native histograms on (the duration histogram's native form)."""
    from asgi_metrics import MetricsMiddleware

    app = make_starlette(extra_routes)
    app.add_middleware(
        MetricsMiddleware, native_histograms=True, **registry_kwargs(MetricsMiddleware)
    )
    return app


def _with_sampled_span(app: ASGIApp) -> ASGIApp:
    """``app`` served with a sampled span current, as under an OpenTelemetry middleware.

    The span is made once and only attached per request (an ``attach``/``detach`` pair),
    so the two span variants below differ only in what our middleware does with it.
    """
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    span = NonRecordingSpan(SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7,
        is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED),
    ))
    with_span = trace.set_span_in_context(span)

    async def traced(scope: Scope, receive: Receive, send: Send) -> None:
        token = context.attach(with_span)
        try:
            await app(scope, receive, send)
        finally:
            context.detach(token)

    return traced


def _build_ours_in_span(exemplars: bool) -> Callable[[int], ASGIApp]:
    def build(extra_routes: int = 0) -> ASGIApp:
        from asgi_metrics import MetricsMiddleware

        app = make_starlette(extra_routes)
        app.add_middleware(
            MetricsMiddleware, exemplars=exemplars, **registry_kwargs(MetricsMiddleware)
        )
        return _with_sampled_span(app)

    return build


@dataclass(frozen=True)
class Variant:
    name: str
    # "bare", "reference" (the no-op layer), "ours", "peer", or "option" (ours with an
    # option, vs ours)
    kind: str
    build: Callable[[int], ASGIApp]


NOOP = "no-op ASGI wrapper"
CORRELATION = "ours + correlation IDs"
SPAN_NO_EXEMPLARS = "ours in a sampled span, exemplars off"
SPAN_EXEMPLARS = "ours in a sampled span, exemplars on"
LABEL = "ours + one header label"
NATIVE = "ours + native histograms"
#: option -> (variant with it, the same without it): the option's cost is the difference.
OPTION_PAIRS: dict[str, tuple[str, str]] = {
    "correlation IDs": (CORRELATION, "ours"),
    "exemplars (sampled span)": (SPAN_EXEMPLARS, SPAN_NO_EXEMPLARS),
    "one header label": (LABEL, "ours"),
    "native histograms": (NATIVE, "ours"),
}

VARIANTS: tuple[Variant, ...] = (
    Variant("bare", "bare", build_bare),
    Variant(NOOP, "reference", build_noop),
    Variant("ours", "ours", build_ours),
    Variant("prometheus-fastapi-instrumentator", "peer", build_instrumentator),
    Variant("starlette-exporter", "peer", build_starlette_exporter),
    Variant("starlette-prometheus", "peer", build_starlette_prometheus),
    Variant("opentelemetry-instrumentation-asgi", "peer", build_otel),
    # Our options, measured against ours (see OPTION_PAIRS): what each one adds.
    Variant(CORRELATION, "option", build_ours_correlation),
    Variant(SPAN_NO_EXEMPLARS, "option", _build_ours_in_span(exemplars=False)),
    Variant(SPAN_EXEMPLARS, "option", _build_ours_in_span(exemplars=True)),
    Variant(LABEL, "option", build_ours_label),
    Variant(NATIVE, "option", build_ours_native),
)

BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}

"""The Flask apps under test: bare, ours, and each peer, built the way users do.

Builders raise ImportError when their package (or our WSGI middleware) is not there yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from prometheus_client import CollectorRegistry

from benchmarks._harness import registry_kwargs
from benchmarks._wsgi_driver import WSGIApp


def make_flask() -> Flask:
    app = Flask("bench")

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> str:
        return f"user {user_id}"

    return app


def build_bare() -> WSGIApp:
    return make_flask()


def build_ours() -> WSGIApp:
    from wsgi_metrics import MetricsMiddleware

    app = make_flask()
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, **registry_kwargs(MetricsMiddleware)
    )
    return app


def build_ours_correlation() -> WSGIApp:
    """Ours with correlation IDs on (no incoming header: each request generates one)."""
    from wsgi_metrics import MetricsMiddleware

    app = make_flask()
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, correlation_id=True, **registry_kwargs(MetricsMiddleware)
    )
    return app


def build_ours_native() -> WSGIApp:
    """Ours with native histograms on (the duration histogram's native form)."""
    from wsgi_metrics import MetricsMiddleware

    app = make_flask()
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, native_histograms=True, **registry_kwargs(MetricsMiddleware)
    )
    return app


def build_flask_exporter() -> WSGIApp:
    from prometheus_flask_exporter import PrometheusMetrics

    app = make_flask()
    PrometheusMetrics(app, registry=CollectorRegistry())
    return app


def build_otel() -> WSGIApp:
    """OpenTelemetry as typically configured, minus the network (see asgi_variants.build_otel)."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    app = make_flask()
    app.wsgi_app = OpenTelemetryMiddleware(  # type: ignore[method-assign]
        app.wsgi_app,
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )
    return app


def build_ours_label() -> WSGIApp:
    """Ours with one request-derived label read from a header the request has."""
    from wsgi_metrics import MetricsMiddleware, from_header

    app = make_flask()
    app.wsgi_app = MetricsMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, labels={"tenant": from_header("X-Tenant")},
        **registry_kwargs(MetricsMiddleware),
    )
    return app


CORRELATION = "ours + correlation IDs"
LABEL = "ours + one header label"
NATIVE = "ours + native histograms"
#: option -> (variant with it, variant without it).
OPTION_PAIRS: dict[str, tuple[str, str]] = {
    "correlation IDs": (CORRELATION, "ours"),
    "one header label": (LABEL, "ours"),
    "native histograms": (NATIVE, "ours"),
}


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # "bare", "ours" or "peer"
    build: Callable[[], WSGIApp]


VARIANTS: tuple[Variant, ...] = (
    Variant("bare", "bare", build_bare),
    Variant("ours", "ours", build_ours),
    Variant("prometheus-flask-exporter", "peer", build_flask_exporter),
    Variant("opentelemetry-instrumentation-wsgi", "peer", build_otel),
    # Our options, measured against ours (see OPTION_PAIRS): what each one adds.
    Variant(CORRELATION, "option", build_ours_correlation),
    Variant(LABEL, "option", build_ours_label),
    Variant(NATIVE, "option", build_ours_native),
)

BY_NAME: dict[str, Variant] = {v.name: v for v in VARIANTS}

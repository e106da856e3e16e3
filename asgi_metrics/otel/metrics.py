"""The same requests, also recorded as OpenTelemetry HTTP server metrics.

Built only when ``meter_provider`` is given or ``otel_metrics=True`` (the global provider).
Instrument names and attributes follow the OpenTelemetry HTTP semantic conventions, so data
pushed over OTLP matches what other OpenTelemetry HTTP instrumentations produce.
"""

from __future__ import annotations

from typing import Any

from asgi_metrics.core.labels import UNMATCHED_ROUTE
from asgi_metrics.core.settings import ConfigurationError, Settings

#: The instrumentation scope name the meter is created with.
SCOPE = "http-request-metrics"


class OtelMetrics:
    """``http.server.request.duration`` (s) and ``http.server.active_requests``."""

    def __init__(self, meter_provider: Any, buckets: tuple[float, ...]) -> None:
        meter = meter_provider.get_meter(SCOPE)
        try:
            self.duration = meter.create_histogram(
                "http.server.request.duration",
                unit="s",
                description="Duration of HTTP server requests.",
                explicit_bucket_boundaries_advisory=list(buckets),
            )
        except TypeError:  # opentelemetry-api before 1.23 has no bucket advice
            self.duration = meter.create_histogram(
                "http.server.request.duration", unit="s",
                description="Duration of HTTP server requests.",
            )
        self.active = meter.create_up_down_counter(
            "http.server.active_requests",
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        # Attribute dicts are reused per label combination: the SDK hashes them anyway,
        # and building them again for every request is measurable.
        self._active_attributes: dict[tuple[str, str], dict[str, str]] = {}

    def _active(self, method: str, scheme: str) -> dict[str, str]:
        attributes = self._active_attributes.get((method, scheme))
        if attributes is None:
            attributes = {"http.request.method": method, "url.scheme": scheme}
            if len(self._active_attributes) < 256:
                self._active_attributes[(method, scheme)] = attributes
        return attributes

    def start(self, method: str, scheme: str) -> None:
        self.active.add(1, self._active(method, scheme))

    def finish(
        self,
        method: str,
        scheme: str,
        route: str,
        status: int,
        duration: float,
        exc: BaseException | None,
    ) -> None:
        """The request :meth:`start` counted as active is complete."""
        self.active.add(-1, self._active(method, scheme))
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.scheme": scheme,
        }
        # The conventions leave http.route out when no route matched, rather than making
        # up a value.
        if route != UNMATCHED_ROUTE:
            attributes["http.route"] = route
        if 100 <= status <= 599:
            attributes["http.response.status_code"] = status
        # error.type: the exception's type, else the status code for a server error.
        if exc is not None:
            attributes["error.type"] = type(exc).__qualname__
        elif status >= 500:
            attributes["error.type"] = str(status)
        self.duration.record(duration, attributes)


def build(settings: Settings) -> OtelMetrics | None:
    """The bridge ``settings`` ask for, or ``None``."""
    provider = settings.meter_provider
    if provider is None and not settings.otel_metrics:
        return None
    if provider is None:
        try:
            from opentelemetry import metrics
        except ImportError:
            raise ConfigurationError(
                "setting 'otel_metrics': needs opentelemetry-api"
                " (pip install 'http-request-metrics[otel]')"
            ) from None
        provider = metrics.get_meter_provider()
    return OtelMetrics(provider, settings.buckets)

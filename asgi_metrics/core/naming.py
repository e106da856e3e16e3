"""Metric names, help texts and label names for the two naming presets.

The names are public API: dashboards and alerts are built on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import utils

from asgi_metrics.core.settings import ConfigurationError, Settings

#: Go's float formatting, as Prometheus writes ``le`` values (``1.0``, ``2.5``, ``+Inf``).
floatToGoString = cast(Callable[[float], str], utils.floatToGoString)


def bucket_labels(bounds: tuple[float, ...]) -> list[str]:
    """The ``le`` label values of a histogram with these finite bounds, ``+Inf`` last:
    the same strings in every exposition and in the multiprocess files."""
    return [floatToGoString(bound) for bound in bounds] + ["+Inf"]


@dataclass(frozen=True)
class Family:
    """One metric family: its full name (without ``_total`` for counters), type, help and
    label names."""

    name: str
    type: str  # "counter", "histogram" or "gauge"
    help: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class MetricNames:
    """The families a store exposes. ``requests`` is ``None`` where the preset has no
    separate request counter (OpenTelemetry counts requests with the histogram's
    ``_count``)."""

    requests: Family | None
    duration: Family
    in_flight: Family
    exceptions: Family
    request_size: Family | None
    response_size: Family | None
    time_to_first_byte: Family | None

    def all(self) -> list[Family]:
        return [
            family
            for family in (
                self.requests,
                self.duration,
                self.in_flight,
                self.exceptions,
                self.request_size,
                self.response_size,
                self.time_to_first_byte,
            )
            if family is not None
        ]


def metric_names(settings: Settings) -> MetricNames:
    """Build the families for ``settings`` (preset, namespace, optional histograms)."""
    prefix = f"{settings.namespace}_" if settings.namespace else ""
    if settings.naming == "otel":
        request = ("http_request_method", "http_route", "http_response_status_code")
        names = MetricNames(
            requests=None,
            duration=Family(
                f"{prefix}http_server_request_duration_seconds", "histogram",
                "Duration of HTTP server requests.", request,
            ),
            in_flight=Family(
                f"{prefix}http_server_active_requests", "gauge",
                "Number of active HTTP server requests.", ("http_request_method",),
            ),
            exceptions=Family(
                f"{prefix}http_server_request_exceptions", "counter",
                "Exceptions raised by the application while serving HTTP requests.",
                ("http_request_method", "http_route", "error_type"),
            ),
            request_size=Family(
                f"{prefix}http_server_request_body_size_bytes", "histogram",
                "Size of HTTP server request bodies.", request,
            ) if settings.request_size else None,
            response_size=Family(
                f"{prefix}http_server_response_body_size_bytes", "histogram",
                "Size of HTTP server response bodies.", request,
            ) if settings.response_size else None,
            time_to_first_byte=Family(
                f"{prefix}http_server_time_to_first_byte_seconds", "histogram",
                "Time from the request's arrival to the start of the response.", request,
            ) if settings.time_to_first_byte else None,
        )
    else:
        request = ("method", "route", "status")
        names = MetricNames(
            requests=Family(
                f"{prefix}http_requests", "counter", "Total HTTP requests served.", request
            ),
            duration=Family(
                f"{prefix}http_request_duration_seconds", "histogram",
                "HTTP request duration, from arrival to the last byte of the response.",
                request,
            ),
            in_flight=Family(
                f"{prefix}http_requests_in_flight", "gauge",
                "HTTP requests currently being served.", ("method",),
            ),
            exceptions=Family(
                f"{prefix}http_request_exceptions", "counter",
                "Exceptions raised by the application while serving HTTP requests.",
                ("method", "route", "exception_type"),
            ),
            request_size=Family(
                f"{prefix}http_request_size_bytes", "histogram",
                "HTTP request body size.", request,
            ) if settings.request_size else None,
            response_size=Family(
                f"{prefix}http_response_size_bytes", "histogram",
                "HTTP response body size.", request,
            ) if settings.response_size else None,
            time_to_first_byte=Family(
                f"{prefix}http_request_time_to_first_byte_seconds", "histogram",
                "Time from the request's arrival to the start of the response.", request,
            ) if settings.time_to_first_byte else None,
        )
    used = {label for family in names.all() for label in family.labels} | {"le"}
    clash = sorted(used & set(settings.const_labels))
    if clash:
        raise ConfigurationError(
            f"setting 'const_labels': {', '.join(clash)} is already a label of these metrics"
        )
    return names

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
class SelfFamilies:
    """The library's families about itself (see :mod:`asgi_metrics.core.self_metrics`)."""

    folded: Family
    overflowed: Family
    failures: Family
    scrapes: Family
    render: Family

    def all(self) -> list[Family]:
        return [self.folded, self.overflowed, self.failures, self.scrapes, self.render]


def self_families(prefix: str, naming: str = "default") -> SelfFamilies:
    """The self-observation families: ``<namespace>_http_metrics_*``, and
    ``<namespace>_http_server_metrics_*`` in the otel preset (so that stores of the two
    presets, whose other names differ, also stay side by side in one registry)."""
    base = f"{prefix}http_server_metrics" if naming == "otel" else f"{prefix}http_metrics"
    return SelfFamilies(
        folded=Family(f"{base}_label_values_folded", "counter",
                      "Request-derived label values recorded as __other__.", ("label",)),
        overflowed=Family(f"{base}_label_sets_overflowed", "counter",
                          "Label sets counted in a family's __overflow__ series"
                          " (max_label_sets reached).", ("family",)),
        failures=Family(f"{base}_recording_failures", "counter",
                        "Failures of the metrics code itself (the requests were served).",
                        ("stage",)),
        scrapes=Family(f"{base}_scrapes", "counter",
                       "Scrapes of the metrics endpoint, by result.", ("result",)),
        render=Family(f"{base}_scrape_render_seconds", "histogram",
                      "Time spent rendering the metrics endpoint's answer.", ()),
    )


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
    #: The library's families about itself (not in :meth:`all`: they are not the store's).
    own: SelfFamilies | None = None

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


# name (after the namespace prefix), type, help, labels; per preset and family. ``None``:
# the preset has no such family.
_Spec = tuple[str, str, str, tuple[str, ...]]
_DEFAULT_REQUEST = ("method", "route", "status")
_OTEL_REQUEST = ("http_request_method", "http_route", "http_response_status_code")
_PRESETS: dict[str, dict[str, _Spec | None]] = {
    "default": {
        "requests": ("http_requests", "counter", "Total HTTP requests served.",
                     _DEFAULT_REQUEST),
        "duration": ("http_request_duration_seconds", "histogram",
                     "HTTP request duration, from arrival to the last byte of the response.",
                     _DEFAULT_REQUEST),
        "in_flight": ("http_requests_in_flight", "gauge",
                      "HTTP requests currently being served.", ("method",)),
        "exceptions": ("http_request_exceptions", "counter",
                       "Exceptions raised by the application while serving HTTP requests.",
                       ("method", "route", "exception_type")),
        "request_size": ("http_request_size_bytes", "histogram", "HTTP request body size.",
                         _DEFAULT_REQUEST),
        "response_size": ("http_response_size_bytes", "histogram",
                          "HTTP response body size.", _DEFAULT_REQUEST),
        "time_to_first_byte": (
            "http_request_time_to_first_byte_seconds", "histogram",
            "Time from the request's arrival to the start of the response.",
            _DEFAULT_REQUEST),
    },
    "otel": {
        # OpenTelemetry counts requests with the duration histogram's _count.
        "requests": None,
        "duration": ("http_server_request_duration_seconds", "histogram",
                     "Duration of HTTP server requests.", _OTEL_REQUEST),
        "in_flight": ("http_server_active_requests", "gauge",
                      "Number of active HTTP server requests.", ("http_request_method",)),
        "exceptions": ("http_server_request_exceptions", "counter",
                       "Exceptions raised by the application while serving HTTP requests.",
                       ("http_request_method", "http_route", "error_type")),
        "request_size": ("http_server_request_body_size_bytes", "histogram",
                         "Size of HTTP server request bodies.", _OTEL_REQUEST),
        "response_size": ("http_server_response_body_size_bytes", "histogram",
                          "Size of HTTP server response bodies.", _OTEL_REQUEST),
        "time_to_first_byte": (
            "http_server_time_to_first_byte_seconds", "histogram",
            "Time from the request's arrival to the start of the response.", _OTEL_REQUEST),
    },
}
#: The families that exist only when their setting turns them on.
_OPTIONAL = ("request_size", "response_size", "time_to_first_byte")


def metric_names(settings: Settings) -> MetricNames:
    """Build the families for ``settings`` (preset, namespace, optional histograms)."""
    prefix = f"{settings.namespace}_" if settings.namespace else ""

    preset = _PRESETS[settings.naming]
    request_labels = tuple(settings.labels)
    route_label = _route_label(preset)

    def family(key: str) -> Family | None:
        spec = preset[key]
        if spec is None or (key in _OPTIONAL and not getattr(settings, key)):
            return None
        name, kind, help_text, labels = spec
        if key == "in_flight":
            if settings.in_flight_by_route:
                labels = (*labels, route_label)
        else:
            labels = (*labels, *request_labels)
        return Family(f"{prefix}{name}", kind, help_text, labels)

    def required(key: str) -> Family:
        found = family(key)
        assert found is not None, key  # every preset has these
        return found

    names = MetricNames(
        requests=family("requests"),
        duration=required("duration"),
        in_flight=required("in_flight"),
        exceptions=required("exceptions"),
        request_size=family("request_size"),
        response_size=family("response_size"),
        time_to_first_byte=family("time_to_first_byte"),
        own=self_families(prefix, settings.naming),
    )
    ours = _our_labels(preset)
    clash = sorted(ours & set(request_labels))
    if clash:
        raise ConfigurationError(
            f"setting 'labels': {', '.join(clash)} is already a label of these metrics"
        )
    used = ours | set(request_labels)
    clash = sorted(used & set(settings.const_labels))
    if clash:
        raise ConfigurationError(
            f"setting 'const_labels': {', '.join(clash)} is already a label of these metrics"
        )
    return names


def _route_label(preset: dict[str, _Spec | None]) -> str:
    spec = preset["duration"]
    assert spec is not None
    return spec[3][1]  # (method, route, status): the route label of the preset


def _our_labels(preset: dict[str, _Spec | None]) -> set[str]:
    """Every label name a preset's families use, with the names Prometheus reserves."""
    labels = {label for spec in preset.values() if spec is not None for label in spec[3]}
    return labels | {"le", "quantile"}

"""The one settings object every integration builds (ASGI keywords, WSGI keywords, Django
settings, Flask config, ``HTTP_METRICS_*`` environment variables).

Each setting is declared once, below: its type, default, the check of its value and the
form of its environment variable (none for settings holding Python objects). Everything is
validated here, once, when the middleware is built: a wrong setting raises
:class:`ConfigurationError` naming the setting, never a failure per request.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from asgi_metrics.core import checks
from asgi_metrics.core.checks import ConfigurationError

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_CONCURRENT_SCRAPES",
    "DEFAULT_MAX_LABEL_SETS",
    "DEFAULT_MAX_LABEL_VALUES",
    "DEFAULT_SIZE_BUCKETS",
    "ENV_PREFIX",
    "ConfigurationError",
    "Settings",
]

#: The OpenTelemetry HTTP server duration buckets, in seconds.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)
#: Body size buckets, in bytes (100 B to 100 MB, by factors of 10).
DEFAULT_SIZE_BUCKETS: tuple[float, ...] = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
#: Default for ``max_label_sets``: far above what a real app's routes x methods x statuses
#: produce, far below what hurts a Prometheus server.
DEFAULT_MAX_LABEL_SETS = 2000
DEFAULT_MAX_CONCURRENT_SCRAPES = 4
#: Default for ``max_label_values``: distinct values one request-derived label keeps.
DEFAULT_MAX_LABEL_VALUES = 20

ENV_PREFIX = "HTTP_METRICS_"

Check = Callable[[Any], Any]
EnvForm = Callable[[str], Any]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _setting(
    default: Any, check: Check, env: EnvForm | None, *, secret: bool = False
) -> Any:
    """Declare a setting: its default, the check of its value, and the parser of its
    ``HTTP_METRICS_<NAME>`` form (``None``: it holds a Python object, no variable)."""
    metadata = {"check": check, "env": env}
    if isinstance(default, (dict, list, set)):
        kind = type(default)
        return field(default_factory=kind, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Validated options shared by every integration.

    Build it with :meth:`Settings.build`, which applies ``HTTP_METRICS_*`` environment
    variables under the keyword options and validates everything.
    """

    #: Prefix for every metric name (``myapp`` gives ``myapp_http_requests_total``).
    namespace: str = _setting("", checks.namespace, checks.env_text)
    #: ``"default"`` (``http_requests_total`` ...) or ``"otel"`` (OpenTelemetry names).
    naming: str = _setting("default", checks.naming, checks.env_text)
    #: Duration histogram bucket bounds, seconds, strictly increasing.
    buckets: tuple[float, ...] = _setting(DEFAULT_BUCKETS, checks.buckets, checks.env_numbers)
    #: Label statuses by class (``2xx``) instead of by code.
    group_status: bool = _setting(False, checks.boolean, checks.env_bool)
    #: Paths that are served but not counted (exact match on the request path, without
    #: the server's ``root_path``).
    exclude_paths: frozenset[str] = _setting(
        frozenset(), checks.exclude_paths, checks.env_list
    )
    #: Regular expressions; a path that fully matches one is not counted.
    exclude_patterns: tuple[re.Pattern[str], ...] = _setting(
        (), checks.exclude_patterns, checks.env_list
    )
    #: Where the middleware serves the metrics; ``None`` turns the endpoint off.
    metrics_path: str | None = _setting(
        "/metrics", checks.metrics_path, checks.env_optional_path
    )
    #: The registry the metrics are registered in (and whose other collectors ``/metrics``
    #: also shows). ``None`` means prometheus_client's default ``REGISTRY``.
    registry: CollectorRegistry | None = _setting(None, checks.registry, None)
    #: Labels with fixed values (strings) added to every series of this library.
    const_labels: Mapping[str, str] = _setting({}, checks.const_labels, checks.env_pairs)
    #: Also record a request body size histogram.
    request_size: bool = _setting(False, checks.boolean, checks.env_bool)
    #: Also record a response body size histogram.
    response_size: bool = _setting(False, checks.boolean, checks.env_bool)
    #: Also record a time-to-first-byte histogram (arrival to the response start).
    time_to_first_byte: bool = _setting(False, checks.boolean, checks.env_bool)
    #: Bucket bounds for the body size histograms, bytes.
    size_buckets: tuple[float, ...] = _setting(
        DEFAULT_SIZE_BUCKETS, checks.buckets, checks.env_numbers
    )
    #: The most distinct label sets one metric family may hold. Past it, new label sets
    #: are counted in one overflow series (every label ``__overflow__``), so a family
    #: never has more than this many series whatever the traffic.
    max_label_sets: int = _setting(
        DEFAULT_MAX_LABEL_SETS, checks.max_label_sets, checks.env_int
    )
    #: Scrapes of ``/metrics`` answered at once; more get 503 with ``Retry-After``.
    #: Concurrent scrapes of the same format share one rendering.
    max_concurrent_scrapes: int = _setting(
        DEFAULT_MAX_CONCURRENT_SCRAPES, checks.positive_int, checks.env_int
    )
    #: When set, ``/metrics`` requires ``Authorization: Bearer <token>``. Never shown in
    #: reprs, logs or error messages.
    metrics_bearer_token: str | None = _setting(
        None, checks.bearer_token, checks.env_text, secret=True
    )
    #: When set, ``/metrics`` requires HTTP basic auth with this ``(user, password)``.
    #: The environment variable takes ``user:password``. Never shown anywhere.
    metrics_basic_auth: tuple[str, str] | None = _setting(
        None, checks.basic_auth, checks.env_user_password, secret=True
    )
    #: Take (or make) a correlation ID per request, expose it to the app and logs and echo
    #: it on the response.
    correlation_id: bool = _setting(False, checks.boolean, checks.env_bool)
    #: The request and response header carrying the correlation ID.
    correlation_header: str = _setting("X-Request-ID", checks.header_name, checks.env_text)
    #: ``validator(incoming) -> bool`` replacing the built-in check of incoming IDs (1-64
    #: characters of ``[A-Za-z0-9._-]``). ``None``: the built-in check.
    correlation_id_validator: Callable[[str], bool] | None = _setting(
        None, checks.validator, None
    )
    #: Client addresses (IPs or CIDR networks) whose incoming IDs are trusted; from anyone
    #: else a new ID is generated. Empty: incoming IDs are trusted from every client.
    trusted_proxies: tuple[Network, ...] = _setting(
        (), checks.trusted_proxies, checks.env_list
    )
    #: Without a usable incoming ID, use the active OpenTelemetry span's trace ID.
    trace_id_as_correlation_id: bool = _setting(False, checks.boolean, checks.env_bool)
    #: Attach ``{trace_id, span_id}`` exemplars of the active sampled span to the duration
    #: histogram and request counter (shown in OpenMetrics scrapes only).
    exemplars: bool = _setting(True, checks.boolean, checks.env_bool)
    #: An OpenTelemetry ``MeterProvider``: also record the requests as OpenTelemetry
    #: HTTP server metrics through it.
    meter_provider: Any = _setting(None, checks.meter_provider, None)
    #: Record OpenTelemetry HTTP server metrics through the global meter provider.
    otel_metrics: bool = _setting(False, checks.boolean, checks.env_bool)
    #: ``False`` turns the middleware into a pass-through: nothing recorded, no
    #: ``/metrics``, the app's responses unchanged.
    enabled: bool = _setting(True, checks.boolean, checks.env_bool)
    #: Labels taken from the request, ``{name: source}``: ``from_header(...)``,
    #: ``from_response_header(...)`` or a callable given the request view. Always bounded.
    labels: Mapping[str, Any] = _setting({}, checks.labels, None)
    #: The most distinct values a request-derived label without ``allowed`` keeps; later
    #: values are recorded as ``__other__``.
    max_label_values: int = _setting(
        DEFAULT_MAX_LABEL_VALUES, checks.positive_int, checks.env_int
    )
    #: Methods that are served but not counted (``OPTIONS``, ``HEAD``), as sent.
    exclude_methods: frozenset[str] = _setting(frozenset(), checks.methods, checks.env_list)
    #: Label the in-flight gauge by route too (resolved when scraped, from what the
    #: framework's router decided: a stuck request shows under its route).
    in_flight_by_route: bool = _setting(False, checks.boolean, checks.env_bool)
    #: Count requests no route claimed, under ``__unmatched__``; ``False`` drops them.
    count_unmatched: bool = _setting(True, checks.boolean, checks.env_bool)
    #: Also keep a native (sparse, exponential-bucket) form of every histogram, served in
    #: protobuf scrapes beside the classic buckets (docs/native_histograms.md).
    native_histograms: bool = _setting(False, checks.boolean, checks.env_bool)
    #: The widest ratio allowed between a native bucket's upper and lower bound: the
    #: schema is the largest whose factor ``2**(2**-schema)`` is at most this (as
    #: client_golang's ``NativeHistogramBucketFactor``).
    native_histogram_bucket_factor: float = _setting(
        1.1, checks.bucket_factor, checks.env_float
    )
    #: The most native buckets one series keeps; past it the series halves its resolution.
    native_histogram_max_buckets: int = _setting(160, checks.positive_int, checks.env_int)
    #: Observations at most this (and 0) go into the native zero bucket.
    native_histogram_zero_threshold: float = _setting(
        2.0**-128, checks.zero_threshold, checks.env_float
    )

    @property
    def target_registry(self) -> CollectorRegistry:
        """The registry to register in: ``registry``, or prometheus_client's default."""
        return REGISTRY if self.registry is None else self.registry

    @classmethod
    def build(
        cls, options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Validate ``options`` (keyword names as documented) over the environment.

        ``environ`` defaults to ``os.environ``; pass ``{}`` to ignore the environment.
        Explicit options win over environment variables.
        """
        options = dict(options or {})
        declared = {f.name: f.metadata for f in fields(cls)}
        for name in options:
            if name not in declared:
                raise ConfigurationError(_unknown(name, declared))
        from_env = _from_environment(declared, os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for name, value in {**{n: v for n, (v, _) in from_env.items()}, **options}.items():
            try:
                values[name] = declared[name]["check"](value)
            except ConfigurationError as exc:
                variable = from_env[name][1] if name not in options else None
                source = f" (from {variable})" if variable else ""
                raise ConfigurationError(f"setting {name!r}{source}: {exc}") from None
        return cls(**values)


def _from_environment(
    declared: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str]
) -> dict[str, tuple[Any, str]]:
    """``{setting: (parsed value, variable name)}`` for every ``HTTP_METRICS_*`` variable."""
    with_env = {name for name, meta in declared.items() if meta["env"] is not None}
    found: dict[str, tuple[Any, str]] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in with_env:
            raise ConfigurationError(
                f"{key}: {_unknown(name, with_env)}"
                " (environment variables are HTTP_METRICS_ plus a setting name)"
            )
        try:
            found[name] = (declared[name]["env"](raw.strip()), key)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{key}: {exc}") from None
    return found


def _unknown(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown setting {name!r}{hint}"

"""The one settings object every integration builds (ASGI keywords, WSGI keywords, Django
settings, Flask config, ``HTTP_METRICS_*`` environment variables).

Everything is validated here, once, when the middleware is built: a wrong setting raises
:class:`ConfigurationError` naming the setting, never a failure per request.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

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

ENV_PREFIX = "HTTP_METRICS_"
NAMING_PRESETS = ("default", "otel")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# RFC 9110 token: what a header field name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigurationError(ValueError):
    """A setting has a wrong value or name. The message names the setting."""


@dataclass(frozen=True)
class Settings:
    """Validated options shared by every integration.

    Build it with :meth:`Settings.build`, which applies ``HTTP_METRICS_*`` environment
    variables under the keyword options and validates everything.
    """

    #: Prefix for every metric name (``myapp`` gives ``myapp_http_requests_total``).
    namespace: str = ""
    #: ``"default"`` (``http_requests_total`` ...) or ``"otel"`` (OpenTelemetry names).
    naming: str = "default"
    #: Duration histogram bucket bounds, seconds, strictly increasing.
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    #: Label statuses by class (``2xx``) instead of by code.
    group_status: bool = False
    #: Paths that are served but not counted (exact match on the request path, without
    #: the server's ``root_path``).
    exclude_paths: frozenset[str] = frozenset()
    #: Regular expressions; a path that fully matches one is not counted.
    exclude_patterns: tuple[re.Pattern[str], ...] = ()
    #: Where the middleware serves the metrics; ``None`` turns the endpoint off.
    metrics_path: str | None = "/metrics"
    #: The registry the metrics are registered in (and whose other collectors ``/metrics``
    #: also shows). ``None`` means prometheus_client's default ``REGISTRY``.
    registry: CollectorRegistry | None = None
    #: Labels with fixed values added to every series of this library.
    const_labels: Mapping[str, str] = field(default_factory=dict)
    #: Also record a request body size histogram.
    request_size: bool = False
    #: Also record a response body size histogram.
    response_size: bool = False
    #: Also record a time-to-first-byte histogram (arrival to the response start).
    time_to_first_byte: bool = False
    #: Bucket bounds for the body size histograms, bytes.
    size_buckets: tuple[float, ...] = DEFAULT_SIZE_BUCKETS
    #: The most distinct label sets one metric family may hold. Past it, new label sets
    #: are counted in one overflow series (every label ``__overflow__``), so a family
    #: never has more than this many series whatever the traffic.
    max_label_sets: int = DEFAULT_MAX_LABEL_SETS
    #: Scrapes of ``/metrics`` answered at once; more get 503 with ``Retry-After``.
    #: Concurrent scrapes of the same format share one rendering.
    max_concurrent_scrapes: int = DEFAULT_MAX_CONCURRENT_SCRAPES
    #: When set, ``/metrics`` requires ``Authorization: Bearer <token>``. Never shown in
    #: reprs, logs or error messages.
    metrics_bearer_token: str | None = field(default=None, repr=False)
    #: When set, ``/metrics`` requires HTTP basic auth with this ``(user, password)``.
    #: The environment variable takes ``user:password``. Never shown anywhere.
    metrics_basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    #: Take (or make) a correlation ID per request, expose it to the app and logs and echo
    #: it on the response.
    correlation_id: bool = False
    #: The request and response header carrying the correlation ID.
    correlation_header: str = "X-Request-ID"
    #: ``validator(incoming) -> bool`` replacing the built-in check of incoming IDs (1-64
    #: characters of ``[A-Za-z0-9._-]``). ``None``: the built-in check.
    correlation_id_validator: Callable[[str], bool] | None = None
    #: Client addresses (IPs or CIDR networks) whose incoming IDs are trusted; from anyone
    #: else a new ID is generated. Empty: incoming IDs are trusted from every client.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: Without a usable incoming ID, use the active OpenTelemetry span's trace ID.
    trace_id_as_correlation_id: bool = False
    #: Attach ``{trace_id, span_id}`` exemplars of the active sampled span to the duration
    #: histogram and request counter (shown in OpenMetrics scrapes only).
    exemplars: bool = True
    #: An OpenTelemetry ``MeterProvider``: also record the requests as OpenTelemetry
    #: HTTP server metrics through it.
    meter_provider: Any = None
    #: Record OpenTelemetry HTTP server metrics through the global meter provider.
    otel_metrics: bool = False

    @property
    def target_registry(self) -> CollectorRegistry:
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
        environ = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise ConfigurationError(_unknown(name, known))
        merged: dict[str, Any] = {}
        from_env: dict[str, str] = {}  # setting name -> the variable that set it
        for key, raw in environ.items():
            if not key.startswith(ENV_PREFIX):
                continue
            name = key[len(ENV_PREFIX):].lower()
            if name not in known or name in _OBJECT_SETTINGS:
                raise ConfigurationError(
                    f"{key}: {_unknown(name, known - _OBJECT_SETTINGS)}"
                    " (environment variables are HTTP_METRICS_ plus a setting name)"
                )
            try:
                merged[name] = _from_env(name, raw)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{key}: {exc}") from None
            from_env[name] = key
        merged.update(options)
        values: dict[str, Any] = {}
        for name, value in merged.items():
            try:
                values[name] = _CHECKS[name](value)
            except ConfigurationError as exc:
                env = from_env.get(name) if name not in options else None
                source = f" (from {env})" if env else ""
                raise ConfigurationError(f"setting {name!r}{source}: {exc}") from None
        return cls(**values)


def _unknown(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown setting {name!r}{hint}"


def _from_env(name: str, raw: str) -> Any:
    """Turn an environment string into the value type ``_CHECKS[name]`` expects."""
    raw = raw.strip()
    if name in _BOOLEANS:
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigurationError(f"expected true or false, got {raw!r}")
    if name in ("buckets", "size_buckets"):
        try:
            return [float(part) for part in raw.split(",") if part.strip()]
        except ValueError:
            raise ConfigurationError(f"expected comma-separated numbers, got {raw!r}") from None
    if name in ("exclude_paths", "exclude_patterns", "trusted_proxies"):
        return [part.strip() for part in raw.split(",") if part.strip()]
    if name == "const_labels":
        labels: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ConfigurationError(f"expected name=value pairs, got {part!r}")
            labels[key.strip()] = value.strip()
        return labels
    if name == "metrics_path" and raw.lower() in ("", "none", "off"):
        return None
    if name in ("max_label_sets", "max_concurrent_scrapes"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigurationError(f"expected a whole number, got {raw!r}") from None
    if name == "metrics_basic_auth":
        # Never echo the value: it is a secret.
        user, sep, password = raw.partition(":")
        if not sep:
            raise ConfigurationError("expected user:password (value not shown)")
        return (user, password)
    return raw


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"expected True or False, got {value!r}")
    return value


def _namespace(value: Any) -> str:
    if not isinstance(value, str) or (value and not _METRIC_NAME.fullmatch(value)):
        raise ConfigurationError(
            f"expected a metric name prefix like 'myapp' ([a-zA-Z_:][a-zA-Z0-9_:]*), got {value!r}"
        )
    return value


def _naming(value: Any) -> str:
    if value not in NAMING_PRESETS:
        raise ConfigurationError(f"expected one of {', '.join(NAMING_PRESETS)}, got {value!r}")
    return str(value)


def _buckets(value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"expected a list of numbers, got {value!r}")
    bounds: list[float] = []
    for bound in value:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ConfigurationError(f"expected numbers, got {bound!r}")
        bounds.append(float(bound))
    if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
        bounds.pop()  # +Inf is always there; accept it written out.
    if not bounds:
        raise ConfigurationError("expected at least one finite bucket bound")
    if any(math.isnan(b) or math.isinf(b) for b in bounds):
        raise ConfigurationError(f"bucket bounds must be finite numbers, got {list(value)!r}")
    if any(b >= a for b, a in itertools.pairwise(bounds)):
        raise ConfigurationError(f"bucket bounds must be strictly increasing, got {bounds!r}")
    return tuple(bounds)


def _exclude_paths(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"expected a list of paths, got {value!r}")
    paths = list(value)
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"paths must be strings starting with '/', got {path!r}")
    return frozenset(paths)


def _exclude_patterns(value: Any) -> tuple[re.Pattern[str], ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"expected a list of regular expressions, got {value!r}")
    patterns = []
    for pattern in value:
        if isinstance(pattern, re.Pattern):
            patterns.append(pattern)
            continue
        if not isinstance(pattern, str):
            raise ConfigurationError(f"expected a regular expression, got {pattern!r}")
        try:
            patterns.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigurationError(
                f"{pattern!r} is not a valid regular expression: {exc}"
            ) from None
    return tuple(patterns)


def _metrics_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(f"expected a path starting with '/' or None, got {value!r}")
    return value


def _registry(value: Any) -> CollectorRegistry | None:
    if value is not None and not isinstance(value, CollectorRegistry):
        raise ConfigurationError(f"expected a prometheus_client CollectorRegistry, got {value!r}")
    return value


def _const_labels(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"expected a mapping of label names to values, got {value!r}")
    labels: dict[str, str] = {}
    for key, label_value in value.items():
        if not isinstance(key, str) or not _LABEL_NAME.fullmatch(key) or key.startswith("__"):
            raise ConfigurationError(f"{key!r} is not a valid label name")
        if not isinstance(label_value, str):
            # Label values are text in the exposition: converting 1 to "1" silently would
            # hide a mistake such as a dict of the wrong settings.
            raise ConfigurationError(
                f"label values must be strings: label {key!r} got a value of type"
                f" {type(label_value).__name__} ({label_value!r})"
            )
        labels[key] = label_value
    return labels


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"expected a whole number of at least 1, got {value!r}")
    return value


def _max_label_sets(value: Any) -> int:
    # One slot is kept for the overflow series, so at least one real label set fits.
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigurationError(f"expected a whole number of at least 2, got {value!r}")
    return value


def _bearer_token(value: Any) -> str | None:
    # Messages describe the value's type, never the value: it is a secret.
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"expected a string, got a {type(value).__name__}")
    if not value.strip():
        raise ConfigurationError("expected a non-empty token")
    if value != value.strip() or not value.isascii() or not value.isprintable():
        raise ConfigurationError(
            "the token must be printable ASCII without surrounding spaces (value not shown)"
        )
    return value


def _correlation_header(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ConfigurationError(f"expected an HTTP header name like 'X-Request-ID', got {value!r}")
    return value


def _validator(value: Any) -> Callable[[str], bool] | None:
    if value is not None and not callable(value):
        raise ConfigurationError(f"expected a callable taking the incoming ID, got {value!r}")
    return value  # type: ignore[no-any-return]


def _trusted_proxies(
    value: Any,
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"expected a list of IP addresses or networks, got {value!r}")
    networks = []
    for item in value:
        if isinstance(item, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            networks.append(item)
            continue
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ConfigurationError(
                f"{item!r} is not an IP address or network (like '10.0.0.0/8')"
            ) from None
    return tuple(networks)


def _meter_provider(value: Any) -> Any:
    if value is not None and not callable(getattr(value, "get_meter", None)):
        raise ConfigurationError(
            f"expected an OpenTelemetry MeterProvider (with get_meter()), got {value!r}"
        )
    return value


def _basic_auth(value: Any) -> tuple[str, str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        user, sep, password = value.partition(":")
        if not sep:
            raise ConfigurationError("expected (user, password) or 'user:password'")
        value = (user, password)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(part, str) for part in value)
    ):
        raise ConfigurationError("expected (user, password), two strings (value not shown)")
    user, password = value
    if not user or not password:
        raise ConfigurationError("user and password must both be non-empty")
    if ":" in user:
        raise ConfigurationError("the user name cannot contain ':' (RFC 7617)")
    return (user, password)


#: Settings that hold Python objects and so have no environment variable.
_OBJECT_SETTINGS = frozenset({"registry", "correlation_id_validator", "meter_provider"})
_BOOLEANS = ("group_status", "request_size", "response_size", "time_to_first_byte",
             "correlation_id", "trace_id_as_correlation_id", "exemplars", "otel_metrics")
_CHECKS: dict[str, Any] = {
    "namespace": _namespace,
    "naming": _naming,
    "buckets": _buckets,
    "group_status": _bool,
    "exclude_paths": _exclude_paths,
    "exclude_patterns": _exclude_patterns,
    "metrics_path": _metrics_path,
    "registry": _registry,
    "const_labels": _const_labels,
    "request_size": _bool,
    "response_size": _bool,
    "time_to_first_byte": _bool,
    "size_buckets": _buckets,
    "max_label_sets": _max_label_sets,
    "max_concurrent_scrapes": _positive_int,
    "metrics_bearer_token": _bearer_token,
    "metrics_basic_auth": _basic_auth,
    "correlation_id": _bool,
    "correlation_header": _correlation_header,
    "correlation_id_validator": _validator,
    "trusted_proxies": _trusted_proxies,
    "trace_id_as_correlation_id": _bool,
    "exemplars": _bool,
    "meter_provider": _meter_provider,
    "otel_metrics": _bool,
}

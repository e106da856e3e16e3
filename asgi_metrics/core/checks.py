"""The checks of the settings' values and the parsers of their environment forms.

A check takes what a user wrote (a keyword argument, a Django or Flask setting, a parsed
environment variable) and returns the validated value, or raises
:class:`ConfigurationError` saying what was expected; the settings declaration adds the
setting's name. An environment parser turns the text of an ``HTTP_METRICS_*`` variable into
what the check takes.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from asgi_metrics.core.labels import KNOWN_METHODS
from asgi_metrics.core.request_labels import MAX_VALUE_LENGTH, Source

NAMING_PRESETS = ("default", "otel")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# RFC 9110 token: what a header field name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigurationError(ValueError):
    """A setting has a wrong value or name. The message names the setting."""


# -- checks ----------------------------------------------------------------------------


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"expected True or False, got {value!r}")
    return value


def namespace(value: Any) -> str:
    if not isinstance(value, str) or (value and not _METRIC_NAME.fullmatch(value)):
        raise ConfigurationError(
            f"expected a metric name prefix like 'myapp' ([a-zA-Z_:][a-zA-Z0-9_:]*), got {value!r}"
        )
    return value


def naming(value: Any) -> str:
    if value not in NAMING_PRESETS:
        raise ConfigurationError(f"expected one of {', '.join(NAMING_PRESETS)}, got {value!r}")
    return str(value)


def buckets(value: Any) -> tuple[float, ...]:
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


def exclude_paths(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"expected a list of paths, got {value!r}")
    paths = list(value)
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"paths must be strings starting with '/', got {path!r}")
    return frozenset(paths)


def exclude_patterns(value: Any) -> tuple[re.Pattern[str], ...]:
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


def metrics_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigurationError(f"expected a path starting with '/' or None, got {value!r}")
    return value


def registry(value: Any) -> CollectorRegistry | None:
    if value is not None and not isinstance(value, CollectorRegistry):
        raise ConfigurationError(f"expected a prometheus_client CollectorRegistry, got {value!r}")
    return value


def const_labels(value: Any) -> dict[str, str]:
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


def labels(value: Any) -> dict[str, Source]:
    """``{name: source}``: a source is ``from_header(...)``, ``from_response_header(...)``
    or a callable taking the request view."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"expected a mapping of label names to sources (from_header(...), a callable),"
            f" got {value!r}"
        )
    sources: dict[str, Source] = {}
    for name, source in value.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ConfigurationError(
                f"{name!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, not starting"
                " with '__')"
            )
        sources[name] = _source(name, source)
    return sources


def _source(name: str, source: Any) -> Source:
    if not isinstance(source, Source):
        if not callable(source):
            raise ConfigurationError(
                f"label {name!r}: expected from_header(...), from_response_header(...) or a"
                f" callable taking the request view, got {source!r}"
            )
        return Source("callable", function=source)
    if source.kind != "callable" and not _HEADER_NAME.fullmatch(source.header or ""):
        raise ConfigurationError(
            f"label {name!r}: {source.header!r} is not an HTTP header name"
        )
    for text in (source.default, *(source.allowed or ())):
        if not isinstance(text, str) or len(text) > MAX_VALUE_LENGTH or text.startswith("/"):
            raise ConfigurationError(
                f"label {name!r}: values must be strings of at most {MAX_VALUE_LENGTH}"
                f" characters, not starting with '/', got {text!r}"
            )
    return source


def methods(value: Any) -> frozenset[str]:
    """HTTP method tokens, as sent (methods are case-sensitive)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"expected a list of HTTP methods, got {value!r}")
    found = set()
    for method in value:
        if not isinstance(method, str) or not _HEADER_NAME.fullmatch(method):
            raise ConfigurationError(f"{method!r} is not an HTTP method")
        if method != method.upper() and method.upper() in KNOWN_METHODS:
            raise ConfigurationError(
                f"methods are case-sensitive: {method!r} is not {method.upper()!r}"
            )
        found.add(method)
    return frozenset(found)


def positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"expected a whole number of at least 1, got {value!r}")
    return value


def max_label_sets(value: Any) -> int:
    # One slot is kept for the overflow series, so at least one real label set fits.
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ConfigurationError(f"expected a whole number of at least 2, got {value!r}")
    return value


def _real(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return None
    return float(value)


def bucket_factor(value: Any) -> float:
    factor = _real(value)
    if factor is None or not 1.0 < factor < math.inf:
        raise ConfigurationError(f"expected a finite number greater than 1, got {value!r}")
    return factor


def zero_threshold(value: Any) -> float:
    threshold = _real(value)
    if threshold is None or not 0.0 <= threshold < math.inf:
        raise ConfigurationError(f"expected a finite number of at least 0, got {value!r}")
    return threshold


def bearer_token(value: Any) -> str | None:
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


def header_name(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ConfigurationError(f"expected an HTTP header name like 'X-Request-ID', got {value!r}")
    return value


def validator(value: Any) -> Callable[[str], bool] | None:
    if value is not None and not callable(value):
        raise ConfigurationError(f"expected a callable taking the incoming ID, got {value!r}")
    return value  # type: ignore[no-any-return]


def trusted_proxies(
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


def meter_provider(value: Any) -> Any:
    if value is not None and not callable(getattr(value, "get_meter", None)):
        raise ConfigurationError(
            f"expected an OpenTelemetry MeterProvider (with get_meter()), got {value!r}"
        )
    return value


def basic_auth(value: Any) -> tuple[str, str] | None:
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


# -- environment forms -----------------------------------------------------------------


def env_bool(raw: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off; empty is false)."""
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigurationError(f"expected true or false, got {raw!r}")


def env_numbers(raw: str) -> list[float]:
    """Comma-separated numbers: ``0.01,0.1,1``."""
    try:
        return [float(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ConfigurationError(f"expected comma-separated numbers, got {raw!r}") from None


def env_list(raw: str) -> list[str]:
    """Comma-separated items: ``/healthz,/ready``."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def env_pairs(raw: str) -> dict[str, str]:
    """Comma-separated ``name=value`` pairs: ``region=eu,tier=web``."""
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigurationError(f"expected name=value pairs, got {part!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def env_int(raw: str) -> int:
    """A whole number."""
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"expected a whole number, got {raw!r}") from None


def env_float(raw: str) -> float:
    """A number: ``1.1``, ``2.9e-39``."""
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"expected a number, got {raw!r}") from None


def env_optional_path(raw: str) -> str | None:
    """A path, or ``none``/``off``/empty for none."""
    return None if raw.lower() in ("", "none", "off") else raw


def env_user_password(raw: str) -> tuple[str, str]:
    """``user:password``. Never echoed: it is a secret."""
    user, sep, password = raw.partition(":")
    if not sep:
        raise ConfigurationError("expected user:password (value not shown)")
    return (user, password)


def env_text(raw: str) -> str:
    """The text as it is."""
    return raw

"""The per-request rules every adapter applies, each defined once here.

Each rule is built for one configuration when the middleware is built (a closure that does
only what that configuration needs), so the request path calls one function and carries
no branch for an option that is off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import AnyStr

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.labels import UNMATCHED_ROUTE
from asgi_metrics.core.settings import Settings


def path_filter(settings: Settings) -> Callable[[object], bool]:
    """``counts(path)``: whether a request to ``path`` is counted, i.e. not excluded by
    ``exclude_paths`` (exact) or ``exclude_patterns`` (full match). A path that is not a
    string is never counted (a hostile or broken scope is served, not measured)."""
    excluded = settings.exclude_paths
    patterns = settings.exclude_patterns
    if not excluded and not patterns:
        # Nothing excluded (the common configuration): every string path counts, and the
        # check is isinstance() in C, with no Python frame per request.
        return str.__instancecheck__
    if not patterns:

        def counts(path: object) -> bool:
            return type(path) is str and path not in excluded

        return counts

    def counts_unless_matched(path: object) -> bool:
        if type(path) is not str or path in excluded:
            return False
        return not any(pattern.fullmatch(path) for pattern in patterns)

    return counts_unless_matched


def route_or_unmatched(
    failures: FailureLog, resolve: Callable[..., object] | None, *request: object
) -> str:
    """The route template ``resolve(*request)`` returns, or the unmatched route when there
    is no resolver, it returns anything but a string, or it raises (reported to
    ``failures`` as a route lookup failure)."""
    if resolve is None:
        return UNMATCHED_ROUTE
    try:
        route = resolve(*request)
    except Exception as exc:
        failures.report("route lookup", exc)
        return UNMATCHED_ROUTE
    return route if isinstance(route, str) else UNMATCHED_ROUTE


def declared_length(value: object) -> int | None:
    """The request body size a ``Content-Length`` value declares (``str`` in WSGI and
    Django, ``bytes`` in ASGI), or ``None`` when it is absent, empty or not a non-negative
    whole number.

    A declared size is what ``request_size`` records, whether or not the app reads the
    body; only without one do the adapters count the bytes the app receives.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    # isascii() first: str.isdigit() also accepts other scripts' digits ("\u0663").
    if not value.isascii() or not value.isdigit():
        return None
    try:
        return int(value)
    except ValueError:  # beyond int()'s digit limit: no real body is that large
        return None


def header_value(headers: Iterable[tuple[AnyStr, AnyStr]], name: AnyStr) -> AnyStr | None:
    """The value of the first header in ``headers`` called ``name`` (given in lower case),
    in any case; ``None`` without one. The same rule for ASGI's byte pairs and WSGI's
    string pairs; a name of another type (a broken app's) is never ``name``."""
    size = len(name)
    kind = type(name)
    for key, value in headers:
        # The length first: most names differ in it, and it costs no copy.
        if type(key) is kind and len(key) == size and key.lower() == name:
            return value
    return None


def has_header(headers: Iterable[tuple[AnyStr, AnyStr]], name: AnyStr) -> bool:
    """Whether ``headers`` has a header called ``name`` (given in lower case), in any case
    (see :func:`header_value`)."""
    return header_value(headers, name) is not None

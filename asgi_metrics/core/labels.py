"""Label policy: every label value comes from a closed set.

Raw methods, raw paths and raw status numbers never reach a label directly; they go through
these functions, which map anything unexpected onto one fixed value.
"""

from __future__ import annotations

from collections.abc import Callable

#: The labels of one series: (method, route, status) or (method, route, exception type),
#: followed by the values of the request-derived labels when some are declared.
Key = tuple[str, ...]

#: The methods that keep their own label value (RFC 9110 plus PATCH). Methods are
#: case-sensitive, so ``get`` is not ``GET``.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
#: The one label value for every other method token (the OpenTelemetry convention).
OTHER_METHOD = "_OTHER"
#: The one route value for requests no route claimed: 404s, slash redirects, plain ASGI/WSGI
#: apps without a resolver. A raw path never becomes a label value.
UNMATCHED_ROUTE = "__unmatched__"
#: The route value of a request to a route marked with ``do_not_track``: served, never
#: recorded. Lookups return this very object, so the recorder tells it by identity; it
#: never reaches a label.
UNTRACKED_ROUTE = "\x00untracked"
#: Status value for a client that went away (or a cancelled task) before a response started,
#: the nginx convention for "client closed request". Not a server error.
CLIENT_CLOSED_STATUS = 499
#: Status value for anything outside 100-599.
OTHER_STATUS = "other"

_STATUS_LABELS = {code: str(code) for code in range(100, 600)}
_STATUS_CLASS_LABELS = {code: f"{code // 100}xx" for code in range(100, 600)}


class _MethodLabels(dict[object, str]):
    """Each standard method to itself; any other (hashable) token to :data:`OTHER_METHOD`.
    A dict, so the common case is one lookup in C with no Python frame."""

    def __missing__(self, method: object) -> str:
        return OTHER_METHOD


#: ``method_label(method) -> label``: ``method`` if it is a standard HTTP method, else
#: :data:`OTHER_METHOD`. Raises ``TypeError`` for an unhashable value (a broken server's),
#: which the adapters' fail-open handling catches.
method_label: Callable[[object], str] = _MethodLabels(
    {method: method for method in KNOWN_METHODS}
).__getitem__


def status_labels(group: bool = False) -> dict[int, str]:
    """The status label for every valid code (100-599), by code or by class."""
    return _STATUS_CLASS_LABELS if group else _STATUS_LABELS


def method_labels(excluded: frozenset[str]) -> Callable[[object], str | None]:
    """``method_label`` for a middleware with ``exclude_methods``: the same labels, and
    ``None`` for an excluded method (served, not counted). Without exclusions it is
    :func:`method_label` itself."""
    if not excluded:
        return method_label
    table = _MethodLabels({method: method for method in KNOWN_METHODS})
    for method in excluded:
        table[method] = None  # type: ignore[assignment]
    return table.__getitem__

"""Labels taken from the request, always bounded: the sources a user declares in the
``labels`` setting, the values app code assigns with :func:`set_label`, and the rule that
keeps every such label's values in a closed set.

A source reads one value per request: a request header (:func:`from_header`), a response
header (:func:`from_response_header`), or a callable given a :class:`RequestView`. The
adapters do not know any of this: each hands :meth:`RequestLabels.values` the request as it
has it (an ASGI scope, a WSGI environ, a Django request) with a :class:`HeaderAccess` that
reads its headers, chosen once per middleware.

Every value then goes through its label's :class:`ValueBound`: a value outside ``allowed``,
longer than :data:`MAX_VALUE_LENGTH` or looking like a path (it starts with ``/``) is
recorded as :data:`OTHER_VALUE`; a label without ``allowed`` keeps the first
``max_label_values`` distinct values and folds later ones into :data:`OTHER_VALUE`, with
one warning naming the label. Values already seen are found with one dict lookup; only a
new value takes the bound's lock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Protocol

from asgi_metrics.core.failures import FailureLog, logger

#: The one value every folded label value becomes.
OTHER_VALUE = "__other__"
#: The longest label value kept; a longer one is folded.
MAX_VALUE_LENGTH = 128

# The values app code assigned during the current request (see set_label). A dict put in
# place by the middleware when the request arrives: threads the framework runs the view in
# (Starlette's thread pool, asgiref's sync_to_async) copy the context, and with it the
# reference to this one dict, so an assignment made there is seen when the request is
# recorded.
_assigned: ContextVar[dict[str, object] | None] = ContextVar(
    "http_metrics_assigned_labels", default=None
)


def set_label(name: str, value: str) -> None:
    """Set the label ``name`` (declared in the ``labels`` setting) for the current request.

    Call it from the app while it serves a request (a view, a dependency, a before-request
    hook), async or sync, in the request's thread or greenlet or in a thread pool the
    framework runs the view in. It wins over the label's source, goes through the label's
    bound like any value, and is forgotten when the request ends. Outside a request, or for
    a name no middleware declared, it does nothing.
    """
    assigned = _assigned.get()
    if assigned is not None:
        assigned[name] = value


def open_assignments() -> tuple[dict[str, object], Token[dict[str, object] | None]]:
    """For a middleware, when a request arrives: a new dict for :func:`set_label` to write
    into for this request, and the token to pass to :func:`close_assignments`.

    Always a new one, never the one already current: a WSGI response nothing closed (a
    test client's) leaves its thread's dict behind, and the next request must not inherit
    its values. A middleware of ours nested inside another (a mounted app with its own)
    so sees the values set inside it, and the outer one does not.
    """
    assigned: dict[str, object] = {}
    return assigned, _assigned.set(assigned)


def fresh_assignments() -> dict[str, object]:
    """:func:`open_assignments` for an adapter that never needs to close them (ASGI: every
    request runs in a context of its own)."""
    assigned: dict[str, object] = {}
    _assigned.set(assigned)
    return assigned


def close_assignments(token: Token[dict[str, object] | None] | None) -> None:
    """Forget the request's assignments (in the context :func:`open_assignments` ran in)."""
    if token is not None:
        # Not contextlib.suppress: this runs per request, and a context manager costs more.
        try:  # noqa: SIM105
            _assigned.reset(token)
        except (ValueError, RuntimeError):  # another context: it ends anyway
            pass


def enter_assignments(
    assigned: dict[str, object],
) -> Token[dict[str, object] | None]:
    """Make a request's assignments (from :func:`open_assignments`) current again, for a
    moment of that request that runs outside it (a held response's body read later);
    undo with :func:`close_assignments`."""
    return _assigned.set(assigned)


@dataclass(frozen=True)
class Source:
    """Where a label's value comes from, as declared in the ``labels`` setting.

    Built with :func:`from_header` or :func:`from_response_header`; a plain callable in
    the setting becomes a ``Source`` of kind ``"callable"``.
    """

    kind: str  # "request_header", "response_header" or "callable"
    header: str = ""
    function: Callable[[RequestView], object] | None = None
    allowed: frozenset[str] | None = None
    default: str = ""


def from_header(
    name: str, *, allowed: Iterable[str] | None = None, default: str = ""
) -> Source:
    """A label taken from the request header ``name`` (any case).

    ``allowed``: the values kept as they are; any other becomes ``__other__``. Without it,
    the label keeps at most ``max_label_values`` distinct values. ``default``: the value
    when the header is absent.
    """
    return Source("request_header", header=name, allowed=_allowed(allowed), default=default)


def from_response_header(
    name: str, *, allowed: Iterable[str] | None = None, default: str = ""
) -> Source:
    """A label taken from the response header ``name`` the app sent (``X-Cache``), with
    ``allowed`` and ``default`` as in :func:`from_header`."""
    return Source("response_header", header=name, allowed=_allowed(allowed), default=default)


def _allowed(values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError(f"allowed: expected a list of strings, got {values!r}")
    return frozenset(values)


class Headers(Mapping[str, str]):
    """Read-only headers by case-insensitive name (the first value of a repeated one)."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            self._values.setdefault(name.lower(), value)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


#: ``read(request, response) -> raw value or None``: one header, for one adapter.
HeaderReader = Callable[[Any, Any], "str | None"]


class HeaderAccess(Protocol):
    """How one adapter reads headers: a reader per declared header, made once per
    middleware (the name lower-cased to bytes in ASGI, turned into ``HTTP_X_TENANT`` in
    WSGI), and all the headers for a :class:`RequestView`."""

    def reader(self, name: str, response: bool) -> HeaderReader: ...

    def request_headers(self, request: Any) -> Iterable[tuple[str, str]]: ...

    def response_headers(self, response: Any) -> Iterable[tuple[str, str]]: ...


class RequestView:
    """What a callable label source receives: the request, framework-neutral.

    ``raw`` is the adapter's own request object (an ASGI scope, a WSGI environ, a Django
    ``HttpRequest``), for anything else.
    """

    __slots__ = ("_access", "_request_headers", "_response", "_response_headers", "method",
                 "raw", "route", "status")

    def __init__(
        self, access: HeaderAccess, raw: Any, method: str, route: str, status: int,
        response: Any,
    ) -> None:
        self._access = access
        self.raw = raw
        #: The method label (``GET``, ..., ``_OTHER``).
        self.method = method
        #: The route template (``/users/{user_id}``) or ``__unmatched__``.
        self.route = route
        #: The response status code.
        self.status = status
        self._response = response
        self._request_headers: Headers | None = None
        self._response_headers: Headers | None = None

    @property
    def request_headers(self) -> Headers:
        """The request's headers."""
        if self._request_headers is None:
            self._request_headers = Headers(self._access.request_headers(self.raw))
        return self._request_headers

    @property
    def response_headers(self) -> Headers:
        """The headers of the response the app sent (empty when it sent none)."""
        if self._response_headers is None:
            self._response_headers = Headers(self._access.response_headers(self._response))
        return self._response_headers


class ValueBound:
    """Keeps one label's values in a closed set (see the module docs)."""

    def __init__(
        self,
        label: str,
        allowed: frozenset[str] | None,
        default: str,
        max_values: int,
        failures: FailureLog,
        on_fold: Callable[[str], None] | None = None,
    ) -> None:
        self.label = label
        self._on_fold = on_fold
        self._allowed = allowed
        self._max_values = max_values
        self._failures = failures
        self._lock = threading.Lock()
        #: value -> itself for every value kept: the one lookup of the common case.
        self.kept: dict[str, str] = {default: default, OTHER_VALUE: OTHER_VALUE}
        if allowed is not None:
            self.kept.update((value, value) for value in allowed)
        self._taken = 0  # values taken as they came (without ``allowed``)
        self._warned: set[str] = set()

    def admit(self, value: str) -> str:
        """The slow path of a value not kept yet: keep it, or fold it."""
        well_formed = (
            type(value) is str and len(value) <= MAX_VALUE_LENGTH and not value.startswith("/")
        )
        if self._allowed is None and well_formed:
            with self._lock:
                if value in self.kept:
                    return value
                if self._taken < self._max_values:
                    self._taken += 1
                    self.kept[value] = value
                    return value
        if self._on_fold is not None:
            self._on_fold(self.label)
        if not well_formed:
            self._warn("malformed", "a value longer than %d characters or starting with '/'"
                       " (a path) was recorded as %r", MAX_VALUE_LENGTH, OTHER_VALUE)
        elif self._allowed is None:
            self._warn("full", "reached max_label_values=%d distinct values; further values"
                       " are recorded as %r. Give it an allowed list, or raise"
                       " max_label_values", self._max_values, OTHER_VALUE)
        return OTHER_VALUE

    def _warn(self, reason: str, message: str, *args: object) -> None:
        """Log once per label and reason (values outside ``allowed`` are expected: no log)."""
        if reason in self._warned:
            return
        self._warned.add(reason)
        with contextlib.suppress(Exception):
            logger.warning("HTTP metrics: label %r: " + message + ".", self.label, *args)


Reader = Callable[..., object]


class RequestLabels:
    """The values of the declared labels for one request, in declaration order.

    Built once per middleware from the ``labels`` setting and the adapter's
    :class:`HeaderAccess`.
    """

    def __init__(
        self,
        sources: Mapping[str, Source],
        access: HeaderAccess,
        max_values: int,
        failures: FailureLog,
        on_fold: Callable[[str], None] | None = None,
    ) -> None:
        self._failures = failures
        bounds = [
            ValueBound(name, source.allowed, source.default, max_values, failures, on_fold)
            for name, source in sources.items()
        ]
        # Per label: its name, whether its reader takes the whole request view's parts
        # (a callable) or only (request, response) (a header), the reader, its default,
        # and its bound's two halves (the lookup of kept values, the slow path).
        self._labels = [
            (name, source.kind == "callable", _reader(source, access), source.default,
             bound.kept.get, bound.admit)
            for (name, source), bound in zip(sources.items(), bounds, strict=True)
        ]


    def values(
        self,
        request: Any,
        response: Any,
        method: str,
        route: str,
        status: int,
        assigned: Mapping[str, object] | None,
    ) -> tuple[str, ...]:
        """Each label's bounded value: what app code assigned, else what its source
        reads, else its default (also when the source fails: logged once)."""
        values = []
        for name, full, read, default, kept, admit in self._labels:
            value = assigned.get(name) if assigned else None
            if value is None:
                try:
                    value = (
                        read(request, response, method, route, status) if full
                        else read(request, response)
                    )
                except Exception as exc:
                    self._failures.report(f"reading the label {name!r}", exc)
                    value = None
            if type(value) is not str:
                value = default if value is None else _text(value)
            found = kept(value)
            values.append(admit(value) if found is None else found)
        return tuple(values)


def _text(value: object) -> str:
    # Numbers and booleans read naturally; anything else is not a label value.
    return str(value) if isinstance(value, (int, float)) else OTHER_VALUE


def _reader(source: Source, access: HeaderAccess) -> Reader:
    """The function reading ``source``'s raw value, made for one adapter."""
    if source.kind != "callable":
        return access.reader(source.header, source.kind == "response_header")
    function = source.function
    assert function is not None

    def call(request: Any, response: Any, method: str, route: str, status: int) -> object:
        return function(RequestView(access, request, method, route, status, response))

    return call

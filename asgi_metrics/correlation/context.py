"""The current request's correlation ID, readable anywhere while the request is served.

A :class:`~contextvars.ContextVar`: it follows the request into ``await``-ed code, into
tasks and background tasks started from it (they copy the context), and, in WSGI servers,
stays with the thread serving the request.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

#: Set by the middleware for the duration of a request (when ``correlation_id=True``).
current_correlation_id: ContextVar[str | None] = ContextVar(
    "http_metrics_correlation_id", default=None
)


def get_correlation_id() -> str | None:
    """The correlation ID of the request being served, or ``None`` outside a request (or
    when the middleware runs without ``correlation_id=True``)."""
    return current_correlation_id.get()


def reset_correlation_id(token: Token[str | None] | None) -> None:
    """Undo the middleware's ``set`` for one request (``None``: nothing was set).

    A ``ValueError`` means the reset runs in another context than the set: an async bridge
    (Django's ``sync_to_async``, a copied context) closing the response. The ID was never
    set in that context, and the request's own context ends with its task or thread use.
    """
    if token is not None:
        # try/except rather than contextlib.suppress: per request, and cheaper.
        try:  # noqa: SIM105
            current_correlation_id.reset(token)
        except ValueError:
            pass

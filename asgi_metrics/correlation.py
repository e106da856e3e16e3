"""The current request's correlation ID, readable anywhere while the request is served.

A :class:`~contextvars.ContextVar`: it follows the request into ``await``-ed code, into
tasks and background tasks started from it (they copy the context), and, in WSGI servers,
stays with the thread serving the request.
"""

from __future__ import annotations

from contextvars import ContextVar

#: Set by the middleware for the duration of a request (when ``correlation_id=True``).
current_correlation_id: ContextVar[str | None] = ContextVar(
    "http_metrics_correlation_id", default=None
)


def get_correlation_id() -> str | None:
    """The correlation ID of the request being served, or ``None`` outside a request (or
    when the middleware runs without ``correlation_id=True``)."""
    return current_correlation_id.get()

"""Correlation IDs: the request's ID in a ContextVar, the accept / validate / generate
rule, ID generation and the logging filter.

``get_correlation_id()`` reads the ID of the request being served, whichever middleware
(ASGI, WSGI, Django) set it.
"""

from asgi_metrics.correlation.context import (
    current_correlation_id,
    get_correlation_id,
    reset_correlation_id,
)
from asgi_metrics.correlation.log_filter import CorrelationIdFilter

__all__ = [
    "CorrelationIdFilter",
    "current_correlation_id",
    "get_correlation_id",
    "reset_correlation_id",
]

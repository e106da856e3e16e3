"""HTTP request metrics for WSGI apps, correct by default.

``app.wsgi_app = MetricsMiddleware(app.wsgi_app)`` (Flask) or
``application = MetricsMiddleware(application)`` (any WSGI app), then scrape ``/metrics``.
Django: put ``"wsgi_metrics.django.MetricsMiddleware"`` first in ``MIDDLEWARE``.
The metrics, labels and settings are :mod:`asgi_metrics`'s, and so are the correlation ID
helpers re-exported here (one ContextVar for both: :func:`get_correlation_id` reads the ID
whichever middleware set it).
"""

from asgi_metrics.core.labels import (
    CLIENT_CLOSED_STATUS,
    OTHER_METHOD,
    OTHER_STATUS,
    UNMATCHED_ROUTE,
)
from asgi_metrics.core.request_labels import (
    OTHER_VALUE,
    RequestView,
    from_header,
    from_response_header,
    set_label,
)
from asgi_metrics.core.settings import DEFAULT_BUCKETS, ConfigurationError, Settings
from asgi_metrics.core.tracking import do_not_track
from asgi_metrics.correlation.context import get_correlation_id
from asgi_metrics.correlation.log_filter import CorrelationIdFilter

from .middleware import EXCEPTION_KEY, MetricsMiddleware

__all__ = [
    "CLIENT_CLOSED_STATUS",
    "DEFAULT_BUCKETS",
    "EXCEPTION_KEY",
    "OTHER_METHOD",
    "OTHER_STATUS",
    "OTHER_VALUE",
    "UNMATCHED_ROUTE",
    "ConfigurationError",
    "CorrelationIdFilter",
    "MetricsMiddleware",
    "RequestView",
    "Settings",
    "do_not_track",
    "from_header",
    "from_response_header",
    "get_correlation_id",
    "set_label",
]

"""HTTP request metrics for ASGI apps, correct by default.

``app.add_middleware(MetricsMiddleware)`` (Starlette, FastAPI) or
``app = MetricsMiddleware(app)`` (any ASGI app), then scrape ``/metrics``.
"""

from .correlation import get_correlation_id
from .endpoint import metrics_app
from .labels import CLIENT_CLOSED_STATUS, OTHER_METHOD, OTHER_STATUS, UNMATCHED_ROUTE
from .log_filter import CorrelationIdFilter
from .middleware import MetricsMiddleware
from .server import MetricsServer, start_metrics_server
from .settings import DEFAULT_BUCKETS, ConfigurationError, Settings
from .store import OVERFLOW

__all__ = [
    "CLIENT_CLOSED_STATUS",
    "DEFAULT_BUCKETS",
    "OTHER_METHOD",
    "OTHER_STATUS",
    "OVERFLOW",
    "UNMATCHED_ROUTE",
    "ConfigurationError",
    "CorrelationIdFilter",
    "MetricsMiddleware",
    "MetricsServer",
    "Settings",
    "get_correlation_id",
    "metrics_app",
    "start_metrics_server",
]

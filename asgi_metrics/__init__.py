"""HTTP request metrics for ASGI apps, correct by default.

``app.add_middleware(MetricsMiddleware)`` (Starlette, FastAPI) or
``app = MetricsMiddleware(app)`` (any ASGI app), then scrape ``/metrics``.

Names are imported on first use (PEP 562), so ``import wsgi_metrics``, which uses this
package's core, loads neither the ASGI middleware nor the Starlette route lookup.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asgi_metrics.asgi.endpoint import metrics_app
    from asgi_metrics.asgi.middleware import MetricsMiddleware
    from asgi_metrics.core.label_cap import OVERFLOW
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
    from asgi_metrics.exposition.server import MetricsServer, start_metrics_server
    from asgi_metrics.routes import EXCEPTION_KEY

#: Public name -> the module defining it.
_WHERE = {
    "CLIENT_CLOSED_STATUS": "asgi_metrics.core.labels",
    "DEFAULT_BUCKETS": "asgi_metrics.core.settings",
    "EXCEPTION_KEY": "asgi_metrics.routes",
    "OTHER_METHOD": "asgi_metrics.core.labels",
    "OTHER_STATUS": "asgi_metrics.core.labels",
    "OTHER_VALUE": "asgi_metrics.core.request_labels",
    "RequestView": "asgi_metrics.core.request_labels",
    "do_not_track": "asgi_metrics.core.tracking",
    "from_header": "asgi_metrics.core.request_labels",
    "from_response_header": "asgi_metrics.core.request_labels",
    "set_label": "asgi_metrics.core.request_labels",
    "OVERFLOW": "asgi_metrics.core.label_cap",
    "UNMATCHED_ROUTE": "asgi_metrics.core.labels",
    "ConfigurationError": "asgi_metrics.core.settings",
    "CorrelationIdFilter": "asgi_metrics.correlation.log_filter",
    "MetricsMiddleware": "asgi_metrics.asgi.middleware",
    "MetricsServer": "asgi_metrics.exposition.server",
    "Settings": "asgi_metrics.core.settings",
    "get_correlation_id": "asgi_metrics.correlation.context",
    "metrics_app": "asgi_metrics.asgi.endpoint",
    "start_metrics_server": "asgi_metrics.exposition.server",
}

__all__ = [
    "CLIENT_CLOSED_STATUS",
    "DEFAULT_BUCKETS",
    "EXCEPTION_KEY",
    "OTHER_METHOD",
    "OTHER_STATUS",
    "OTHER_VALUE",
    "OVERFLOW",
    "UNMATCHED_ROUTE",
    "ConfigurationError",
    "CorrelationIdFilter",
    "MetricsMiddleware",
    "MetricsServer",
    "RequestView",
    "Settings",
    "do_not_track",
    "from_header",
    "from_response_header",
    "get_correlation_id",
    "metrics_app",
    "set_label",
    "start_metrics_server",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'asgi_metrics' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})

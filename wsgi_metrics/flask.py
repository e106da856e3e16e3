"""Flask: the extension, ``Metrics(app)`` or ``Metrics().init_app(app)``.

Route templates come from :mod:`wsgi_metrics.flask_routes`, which wrapping a Flask app's
``wsgi_app`` in :class:`~wsgi_metrics.MetricsMiddleware` also finds by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from asgi_metrics.core.settings import ConfigurationError, Settings
from wsgi_metrics.flask_routes import ROUTE_KEY, FlaskRoutes, resolver_for
from wsgi_metrics.middleware import MetricsMiddleware

__all__ = ["CONFIG_KEY", "EXTENSION_KEY", "ROUTE_KEY", "FlaskRoutes", "Metrics", "resolver_for"]

#: The ``app.config`` key read by :class:`Metrics`.
CONFIG_KEY = "HTTP_METRICS"
#: The ``app.extensions`` key the middleware is kept under.
EXTENSION_KEY = "http_metrics"


class Metrics:
    """The Flask extension: ``Metrics(app)`` or ``metrics = Metrics(); metrics.init_app(app)``.

    Settings come from ``app.config["HTTP_METRICS"]`` (a dict with the same keys as the
    middleware's keyword options), with ``options`` given here taking precedence, over
    ``HTTP_METRICS_*`` environment variables. ``init_app`` wraps ``app.wsgi_app`` in a
    :class:`~wsgi_metrics.MetricsMiddleware` and keeps it in
    ``app.extensions["http_metrics"]``.
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> MetricsMiddleware:
        """Wrap ``app.wsgi_app``; returns the middleware."""
        configured = app.config.get(CONFIG_KEY) or {}
        if not isinstance(configured, Mapping):
            raise ConfigurationError(
                f"app.config[{CONFIG_KEY!r}]: expected a dict of settings, got {configured!r}"
            )
        options = {**configured, **self.options}
        route_resolver = options.pop("route_resolver", None)
        settings = Settings.build(options)
        middleware = MetricsMiddleware.from_settings(
            app.wsgi_app,
            settings,
            route_resolver=route_resolver,
            # Disabled: a pass-through, which hooks nothing into Flask.
            framework=FlaskRoutes(app) if settings.enabled else None,
        )
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = middleware
        return middleware

"""Quart: the extension, ``Metrics(app)`` or ``Metrics().init_app(app)``, the shape of
``wsgi_metrics.flask.Metrics``.

Route templates and the exceptions Quart turns into 500s come from
:mod:`asgi_metrics.routes.quart`, which wrapping a Quart app's ``asgi_app`` in
:class:`~asgi_metrics.MetricsMiddleware` also finds by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from quart import Quart

from asgi_metrics.asgi.middleware import MetricsMiddleware
from asgi_metrics.asgi.types import ASGIApp
from asgi_metrics.core.settings import ConfigurationError

__all__ = ["CONFIG_KEY", "EXTENSION_KEY", "Metrics"]

#: The ``app.config`` key read by :class:`Metrics`.
CONFIG_KEY = "HTTP_METRICS"
#: The ``app.extensions`` key the middleware is kept under.
EXTENSION_KEY = "http_metrics"


class Metrics:
    """The Quart extension: ``Metrics(app)`` or ``metrics = Metrics(); metrics.init_app(app)``.

    Settings come from ``app.config["HTTP_METRICS"]`` (a dict with the same keys as the
    middleware's keyword options), with ``options`` given here taking precedence, over
    ``HTTP_METRICS_*`` environment variables. ``route_resolver`` replaces Quart's rule
    lookup (exceptions are still reported by Quart's signal). ``init_app`` wraps
    ``app.asgi_app`` in a :class:`~asgi_metrics.MetricsMiddleware` and keeps it in
    ``app.extensions["http_metrics"]``.
    """

    def __init__(self, app: Quart | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Quart) -> MetricsMiddleware:
        """Wrap ``app.asgi_app``; returns the middleware."""
        configured = app.config.get(CONFIG_KEY) or {}
        if not isinstance(configured, Mapping):
            raise ConfigurationError(
                f"app.config[{CONFIG_KEY!r}]: expected a dict of settings, got {configured!r}"
            )
        options = {**configured, **self.options}
        # MetricsMiddleware validates them (Settings.build) and finds Quart's routes from
        # the bound asgi_app.
        middleware = MetricsMiddleware(cast(ASGIApp, app.asgi_app), **options)
        app.asgi_app = middleware  # type: ignore[method-assign,assignment]
        app.extensions[EXTENSION_KEY] = middleware
        return middleware

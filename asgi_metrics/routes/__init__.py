"""Route templates read from what a framework's router already decided, one module per
ASGI framework (Flask's and Django's live with their adapters in ``wsgi_metrics``).

:func:`lookup_for` picks the lookup for the app the middleware wraps, once, when the
middleware is built: a framework's own when the app is one of its apps (a module for it
registers in :data:`DETECTORS`), else the Starlette/FastAPI lookup, which reads
``scope["router"]`` and answers ``None`` (unmatched) for any other app.

A framework's module may also hook the framework's exception handling, to report in
``scope[EXCEPTION_KEY]`` the exceptions the framework turns into its own 500.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, MutableMapping
from importlib import import_module
from typing import Any

from asgi_metrics.core.keys import ASGI_EXCEPTION_KEY

#: Where a framework module reports an exception its framework turned into its own 500
#: (the one definition is in :mod:`asgi_metrics.core.keys`).
EXCEPTION_KEY = ASGI_EXCEPTION_KEY

#: ``lookup(scope, root_path as it arrived) -> template or None``.
RouteLookup = Callable[[MutableMapping[str, Any], str], "str | None"]

Detector = Callable[[object], "RouteLookup | None"]


def _lazy(module: str) -> Detector:
    """``module.detect``, imported on first use: only once its framework is imported."""

    def detect(app: object) -> RouteLookup | None:
        found: RouteLookup | None = import_module(module).detect(app)
        return found

    return detect


#: (the framework's top-level package, ``detect(app) -> lookup or None``), tried in order
#: for an app whose package is imported. ``detect`` may raise ``ConfigurationError`` for
#: an app the middleware cannot work around (Litestar's per-route middleware stack).
DETECTORS: list[tuple[str, Detector]] = [
    ("litestar", _lazy("asgi_metrics.routes.litestar")),
    ("quart", _lazy("asgi_metrics.routes.quart")),
    ("falcon", _lazy("asgi_metrics.routes.falcon")),
]


def lookup_for(app: object) -> RouteLookup:
    """The route lookup for ``app``: its framework's, else the Starlette/FastAPI one."""
    for package, detect in DETECTORS:
        if package in sys.modules:  # not imported: it cannot be that framework's app
            lookup = detect(app)
            if lookup is not None:
                return lookup
    from asgi_metrics.routes.starlette import RouteTemplates

    return RouteTemplates().lookup

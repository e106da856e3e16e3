"""Route templates read from what a framework's router already decided, one module per
ASGI framework (Flask's and Django's live with their adapters in ``wsgi_metrics``).

:func:`lookup_for` picks the lookup for the app the middleware wraps, once, when the
middleware is built: a framework's own when the app is one of its apps (a module for it
registers in :data:`DETECTORS`), else the Starlette/FastAPI lookup, which reads
``scope["router"]`` and answers ``None`` (unmatched) for any other app.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, MutableMapping
from typing import Any

#: ``lookup(scope, root_path as it arrived) -> template or None``.
RouteLookup = Callable[[MutableMapping[str, Any], str], "str | None"]



def _falcon(app: object) -> RouteLookup | None:
    from asgi_metrics.routes.falcon import detect

    return detect(app)  # type: ignore[no-any-return]


#: (the framework's top-level package, ``detect(app) -> lookup or None``), tried in order
#: for an app whose package is imported.
DETECTORS: list[tuple[str, Callable[[object], RouteLookup | None]]] = [
    ("falcon", _falcon),
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

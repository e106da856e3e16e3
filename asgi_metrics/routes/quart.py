"""Quart route templates: the rule Quart matched, read from Quart's own request state.

Quart matches the URL when it pushes the request context, and pops the context (its
``request`` with it) before it sends the response, so by the time the middleware records
the request there is no ``request.url_rule`` left to read. Quart's ``request_started``
signal, sent inside the context before the view runs, leaves the rule as written
(``/api/items/<int:item_id>``, blueprint prefixes included) in the ASGI scope, which
Quart's request shares with the middleware; ``got_request_exception``, sent for an
exception Quart turns into a 500 (or propagates), leaves the exception in
``scope[EXCEPTION_KEY]``. The request is never matched again.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, cast

from quart import Quart, got_request_exception, request_started
from quart import request as current_request

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.labels import UNTRACKED_ROUTE
from asgi_metrics.core.tracking import untracked
from asgi_metrics.routes import EXCEPTION_KEY, RouteLookup

Scope = MutableMapping[str, Any]

#: Where the ``request_started`` receiver leaves the matched rule.
ROUTE_KEY = "asgi_metrics.quart.route"
#: The ``app.extensions`` key of an app's :class:`QuartRoutes` (one per app).
ROUTES_EXTENSION_KEY = "http_metrics.routes"

_MAX_DEPTH = 32

#: Failures of the signal receivers, which run inside Quart's request handling: logged
#: (rate-limited) on the ``asgi_metrics`` logger, never raised into it.
_failures = FailureLog()


class QuartRoutes:
    """The route lookup for one Quart app, fed by its signals.

    ``None`` (unmatched) when no rule matched: 404s, 405s (Werkzeug's router does not
    say which rule the path matched) and strict-slash redirects, as with Flask.
    """

    def __init__(self, app: Quart) -> None:
        self.app = app
        # Blinker holds receivers weakly: the bound methods live as long as this object,
        # which the app keeps in app.extensions. Async receivers, so Quart awaits them
        # directly (it would run a sync one in a thread).
        request_started.connect(self._on_request, app)
        got_request_exception.connect(self._on_exception, app)

    def lookup(self, scope: Scope, root_path: str) -> str | None:
        """The rule of a finished request, as the signal left it."""
        route = scope.get(ROUTE_KEY)
        return route if isinstance(route, str) else None

    async def _on_request(self, sender: Quart, **extra: Any) -> None:
        try:
            rule = current_request.url_rule
            if rule is not None:
                view = self.app.view_functions.get(rule.endpoint)
                _scope()[ROUTE_KEY] = UNTRACKED_ROUTE if untracked(view) else rule.rule
        except Exception as failure:
            _failures.report("reading the Quart route", failure)

    async def _on_exception(self, sender: Quart, exception: BaseException, **extra: Any) -> None:
        try:
            _scope()[EXCEPTION_KEY] = exception
        except Exception as failure:
            _failures.report("reading a Quart exception", failure)


def _scope() -> Scope:
    """The current request's ASGI scope: the dict the middleware passed to Quart."""
    return cast(Scope, current_request.scope)


def routes_for(app: Quart) -> QuartRoutes:
    """The app's :class:`QuartRoutes`, connected to its signals once."""
    routes = app.extensions.get(ROUTES_EXTENSION_KEY)
    if not isinstance(routes, QuartRoutes):
        routes = app.extensions[ROUTES_EXTENSION_KEY] = QuartRoutes(app)
    return routes


def detect(app: object) -> RouteLookup | None:
    """The lookup when ``app`` is a Quart app or its bound ``asgi_app`` (also behind
    middleware that keeps it in ``.app``)."""
    current = app
    for _ in range(_MAX_DEPTH):
        owner = getattr(current, "__self__", current)
        if isinstance(owner, Quart):
            return routes_for(owner).lookup
        current = getattr(current, "app", None)
        if current is None:
            break
    return None

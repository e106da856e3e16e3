"""Litestar route templates, read from what Litestar's router wrote into the scope.

Litestar's ``ASGIRouter`` matches the path once and writes the result into the scope it
was given (ours): ``scope["route_handler"]`` (the handler it chose) and
``scope["path_template"]``, the route's full path as Litestar formats it: ``Router`` and
``Controller`` prefixes included, parameter types dropped (``/api/v1/items/{item_id}``
for ``@get("/items/{item_id:int}")`` under ``Router(path="/api")`` and
``Router(path="/v1")``): the template Litestar's own Prometheus plugin and OpenAPI schema
show. When it matches nothing (404, 405) it writes neither. An ASGI mount
(``@asgi(path, is_mount=True)``) gets an empty ``path_template``: its full path comes from
the app's routes, by handler, indexed once. The path is never matched again.

Exceptions Litestar turns into its own 500 are reported in ``scope[EXCEPTION_KEY]`` by an
``after_exception`` hook (Litestar's public hook, called with the exception and the scope
before the error response is built), so the response is Litestar's own, unchanged.

Litestar builds the middleware of its ``middleware=[...]`` lists once per route handler,
inside the router: there the middleware would never see a 404, a 405 or ``/metrics``,
and every route would have its own store. :func:`detect` refuses that placement with a
:class:`~asgi_metrics.ConfigurationError` when the app starts.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from types import FunctionType
from typing import Any, cast

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.handlers import ASGIRouteHandler
from litestar.routes import ASGIRoute, BaseRoute
from litestar.types import Scope as LitestarScope

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.labels import UNTRACKED_ROUTE
from asgi_metrics.core.settings import ConfigurationError
from asgi_metrics.core.tracking import untracked
from asgi_metrics.routes import EXCEPTION_KEY, RouteLookup

Scope = MutableMapping[str, Any]

_MAX_DEPTH = 32

#: Failures of the exception hook, which runs inside Litestar's error handling: logged
#: (rate-limited) on the ``asgi_metrics`` logger, never raised into it.
_failures = FailureLog()

WRAP_THE_APP = (
    "MetricsMiddleware is in a Litestar 'middleware' list: Litestar builds that middleware"
    " once per route handler, after routing, so it would never see 404s, 405s or its own"
    " /metrics, and each route would get a separate store. Wrap the app instead:"
    " app = MetricsMiddleware(Litestar(...))"
)


class LitestarRoutes:
    """The route lookup for one Litestar app: ``scope["path_template"]``, or a mount's
    full path; ``None`` (unmatched) when the router matched nothing."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        # id(mount handler) -> (handler, its route's full path); the handler is kept so
        # its id() is not reused.
        self._mounts: dict[int, tuple[object, str]] = {}
        self._indexed_routes = -1  # len(app.routes) when the mounts were indexed
        # id(handler) -> (handler, whether it or its function is marked do_not_track):
        # each handler is looked at once, when first matched.
        self._marked: dict[int, tuple[object, bool]] = {}

    def lookup(self, scope: Scope, root_path: str) -> str | None:
        """The template of a finished request (``root_path`` plays no part: Litestar's
        templates never contain it)."""
        handler = scope.get("route_handler")
        if handler is not None and self._untracked(handler):
            return UNTRACKED_ROUTE
        if isinstance(handler, ASGIRouteHandler) and handler.is_mount:
            return self._mount_path(handler)
        template = scope.get("path_template")
        return template if isinstance(template, str) and template else None

    def _untracked(self, handler: object) -> bool:
        known = self._marked.get(id(handler))
        if known is None or known[0] is not handler:
            if len(self._marked) > 10_000:  # handlers come and go only in test suites
                self._marked.clear()
            marked = untracked(handler) or untracked(getattr(handler, "fn", None))
            known = self._marked[id(handler)] = (handler, marked)
        return known[1]

    def _mount_path(self, handler: ASGIRouteHandler) -> str | None:
        found = self._mounts.get(id(handler))
        if found is None or found[0] is not handler:
            routes = self.app.routes
            if len(routes) == self._indexed_routes:
                return None  # a mount outside this app's routes: nothing to name it by
            self._indexed_routes = len(routes)
            self._mounts = {
                id(route.route_handler): (route.route_handler, route.path_format)
                for route in routes
                if isinstance(route, ASGIRoute) and route.route_handler.is_mount
            }
            found = self._mounts.get(id(handler))
        return None if found is None or found[0] is not handler else found[1]


async def report_exception(exc: Exception, litestar_scope: LitestarScope) -> None:
    """Litestar's ``after_exception`` hook: reports an exception Litestar answers with a
    500 in ``scope[EXCEPTION_KEY]``.

    Counted: an ``HTTPException`` with status 500 (Litestar raises
    ``ImproperlyConfiguredException``, one of them, for its own failures), and any other
    exception no exception handler claims by its class (the route's, its routers' and
    the app's, as ``route_handler.resolve_exception_handlers()`` gives them): those are
    Litestar's default 500, or the app's handler for status 500. Not counted: other
    ``HTTPException`` statuses (404, 405, 503 ... are answers, not failures) and
    exceptions the app maps to a response of its own by class, as Starlette's
    ``exception_handlers`` are not counted.
    """
    scope = cast(Scope, litestar_scope)  # a TypedDict for Litestar, our key is not in it
    try:
        if scope.get("type") == "http" and _answered_with_500(exc, scope):
            scope[EXCEPTION_KEY] = exc
    except Exception as failure:
        _failures.report("reading a Litestar exception", failure)


def _answered_with_500(exc: Exception, scope: Scope) -> bool:
    if isinstance(exc, HTTPException):
        return exc.status_code == 500
    handler = scope.get("route_handler")
    if handler is not None:
        handlers = handler.resolve_exception_handlers()
    else:  # raised before a route was chosen
        handlers = scope["litestar_app"].exception_handlers
    return not any(cls in handlers for cls in type(exc).__mro__)


def detect(app: object) -> RouteLookup | None:
    """The lookup for a Litestar app (also behind middleware that keeps it in ``.app``),
    with :func:`report_exception` added to its ``after_exception`` hooks once.

    Raises :class:`ConfigurationError` when ``app`` is a route handler's stack, i.e. the
    middleware was put in Litestar's ``middleware=[...]``.
    """
    current = app
    for _ in range(_MAX_DEPTH):
        if isinstance(current, Litestar):
            if report_exception not in current.after_exception:
                current.after_exception.append(report_exception)
            return LitestarRoutes(current).lookup
        if _route_stack(current):
            raise ConfigurationError(WRAP_THE_APP)
        current = getattr(current, "app", None)
        if current is None:
            break
    return None


def _route_stack(obj: object) -> bool:
    """Whether ``obj`` is the inside of a Litestar route's middleware stack: a route's
    ``handle`` (its innermost app), or a function of Litestar's (the app an
    ``ASGIMiddleware`` builds around the next one)."""
    if isinstance(getattr(obj, "__self__", None), BaseRoute):
        return True
    return isinstance(obj, FunctionType) and obj.__module__.startswith("litestar.")

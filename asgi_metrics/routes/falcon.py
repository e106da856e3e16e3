"""Falcon (``falcon.asgi.App``) route templates: the ``uri_template`` Falcon's router chose.

Falcon keeps the matched template on its ``Request`` (``req.uri_template``), which a
middleware wrapping the app cannot reach: the request object lives only inside the app's
``__call__``. So when the ASGI middleware is built around a ``falcon.asgi.App``, two public
Falcon hooks are installed on that app, once:

- a Falcon middleware whose ``process_response`` (which Falcon calls for every request,
  after routing, the responder and the error handlers) copies ``req.uri_template`` into
  the ASGI scope under :data:`ROUTE_KEY`, read by :func:`lookup` after the response;
- an error reporter (``app.set_error_reporter``, Falcon 4.4+, documented as not changing
  how exceptions are handled) that puts an exception Falcon's error handling turned into a
  response in ``scope["asgi_metrics.exception"]``, so it is counted once, under its route.
  Falcon's own ``HTTPError`` / ``HTTPStatus`` (a 404 raised on purpose, a redirect) are
  responses, not failures: not counted. A reporter the app already had is still called.

The request is never matched again. The WSGI twin is :mod:`wsgi_metrics.falcon_routes`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import falcon
import falcon.asgi

from asgi_metrics.compat import UNREADABLE, falcon_error_reporter
from asgi_metrics.core.keys import ASGI_EXCEPTION_KEY
from asgi_metrics.core.labels import UNTRACKED_ROUTE
from asgi_metrics.core.tracking import untracked

#: Where the Falcon middleware leaves the matched template in the scope.
ROUTE_KEY = "asgi_metrics.falcon.route"
#: Falcon's exceptions that are responses (4xx, redirects, its own 500 raised on purpose).
_RESPONSES = (falcon.HTTPError, falcon.HTTPStatus)


class _RouteCopy:
    """The Falcon middleware: the matched template into the scope, for every request,
    as soon as Falcon has routed it (for the in-flight gauge by route) and again at the
    end. A resource marked ``do_not_track`` gives the untracked route."""

    __slots__ = ()

    async def process_resource(
        self, req: falcon.asgi.Request, resp: object, resource: object, params: object
    ) -> None:
        del resp, params
        _copy(req, resource)

    async def process_response(
        self, req: falcon.asgi.Request, resp: object, resource: object, req_succeeded: bool
    ) -> None:
        del resp, req_succeeded
        _copy(req, resource)


def _copy(req: falcon.asgi.Request, resource: object) -> None:
    template = req.uri_template
    if template is not None:  # None: no route matched (404, a sink, a static route)
        req.scope[ROUTE_KEY] = UNTRACKED_ROUTE if untracked(resource) else template


def _reporter(previous: Any) -> Any:
    def report(
        req: falcon.asgi.Request, error: Exception, params: dict[str, Any], handled: bool
    ) -> None:
        # Unhandled ones propagate to the middleware, which counts them itself; the route
        # is noted for them too (Falcon skips process_response when it re-raises).
        scope = req.scope
        if handled and not isinstance(error, _RESPONSES):
            scope.setdefault(ASGI_EXCEPTION_KEY, error)  # the first one: the cause
        template = req.uri_template
        if template is not None and scope.get(ROUTE_KEY) is not UNTRACKED_ROUTE:
            scope[ROUTE_KEY] = template
        if previous is not None:
            previous(req, error, params, handled)

    return report


def lookup(scope: MutableMapping[str, Any], root_path: str) -> str | None:
    """The template Falcon matched for this request, or ``None`` (unmatched)."""
    route = scope.get(ROUTE_KEY)
    return route if isinstance(route, str) else None


def detect(app: object) -> Any:
    """:func:`lookup` for a ``falcon.asgi.App``, its hooks installed; else ``None``."""
    if not isinstance(app, falcon.asgi.App):
        return None
    app.add_middleware(_RouteCopy())
    previous = falcon_error_reporter(app)
    set_reporter = getattr(app, "set_error_reporter", None)  # Falcon 4.4+
    if set_reporter is not None and previous is not UNREADABLE:
        set_reporter(_reporter(previous))
    return lookup

"""Falcon (``falcon.App``) route templates: the ``uri_template`` Falcon's router chose.

Falcon keeps the matched template on its ``Request`` (``req.uri_template``), which a WSGI
middleware cannot reach: the request object lives only inside the app's ``__call__``. So
when :class:`~wsgi_metrics.MetricsMiddleware` is built around a ``falcon.App``, two public
Falcon hooks are installed on that app, once:

- a Falcon middleware whose ``process_response`` (called for every request, after routing,
  the responder and the error handlers, before Falcon calls ``start_response``) copies
  ``req.uri_template`` into the environ under :data:`ROUTE_KEY`;
- an error reporter (``app.set_error_reporter``, Falcon 4.4+, documented as not changing
  how exceptions are handled) that puts an exception Falcon's error handling turned into a
  response in ``environ["wsgi_metrics.exception"]``, so it is counted once, under its
  route. Falcon's ``HTTPError`` / ``HTTPStatus`` are responses, not failures: not counted.
  A reporter the app already had is still called.

The request is never matched again. The ASGI twin is :mod:`asgi_metrics.routes.falcon`.
"""

from __future__ import annotations

import sys
from typing import Any

import falcon

from asgi_metrics.compat import UNREADABLE, falcon_error_reporter
from wsgi_metrics.types import EXCEPTION_KEY, Environ

#: Where the Falcon middleware leaves the matched template in the environ.
ROUTE_KEY = "wsgi_metrics.falcon.route"
#: Falcon's exceptions that are responses (4xx, redirects, its own 500 raised on purpose).
_RESPONSES = (falcon.HTTPError, falcon.HTTPStatus)


class _RouteCopy:
    """The Falcon middleware: the matched template into the environ, for every request."""

    __slots__ = ()

    def process_response(
        self, req: falcon.Request, resp: object, resource: object, req_succeeded: bool
    ) -> None:
        del resp, resource, req_succeeded
        template = req.uri_template
        if template is not None:  # None: no route matched (404, a sink, a static route)
            req.env[ROUTE_KEY] = template


def _reporter(previous: Any) -> Any:
    def report(
        req: falcon.Request, error: Exception, params: dict[str, Any], handled: bool
    ) -> None:
        # Unhandled ones propagate to the middleware, which counts them itself; the route
        # is noted for them too (Falcon skips process_response when it re-raises).
        env = req.env
        if handled and not isinstance(error, _RESPONSES):
            env.setdefault(EXCEPTION_KEY, error)  # the first one: the cause
        template = req.uri_template
        if template is not None:
            env[ROUTE_KEY] = template
        if previous is not None:
            previous(req, error, params, handled)

    return report


class FalconRoutes:
    """A ``route_resolver`` for one ``falcon.App``: the template as Falcon wrote it
    (``/items/{item_id:int}``); ``None`` (unmatched) when no route matched (404, sinks,
    static routes). A 405 keeps its template: Falcon's router matched the path."""

    def __init__(self, app: falcon.App[Any, Any]) -> None:
        app.add_middleware(_RouteCopy())
        previous = falcon_error_reporter(app)
        set_reporter = getattr(app, "set_error_reporter", None)  # Falcon 4.4+
        if set_reporter is not None and previous is not UNREADABLE:
            set_reporter(_reporter(previous))

    def __call__(self, environ: Environ) -> str | None:
        route = environ.get(ROUTE_KEY)
        return route if isinstance(route, str) else None


def resolver_for(app: object) -> FalconRoutes | None:
    """A :class:`FalconRoutes` when ``app`` is a (WSGI) ``falcon.App``."""
    if not isinstance(app, falcon.App):
        return None
    asgi = sys.modules.get("falcon.asgi")  # its App subclasses falcon.App; not ours here
    if asgi is not None and isinstance(app, asgi.App):
        return None
    return FalconRoutes(app)

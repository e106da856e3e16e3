"""Flask route templates: the rule Flask matched, read from Flask's own request state.

Flask pops its request context (and clears ``environ["werkzeug.request"]``) before a WSGI
middleware regains control, so the matched rule is read while the context is alive: when
the app calls ``start_response``, which Flask does inside the context. When Flask lets an
unhandled exception propagate (``PROPAGATE_EXCEPTIONS``, testing mode) it never calls
``start_response``; its ``got_request_exception`` signal, sent inside the context, leaves
the rule (and the exception) in the environ instead. The request is never matched again.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, got_request_exception
from flask import request as current_request

from asgi_metrics.core.labels import UNTRACKED_ROUTE
from asgi_metrics.core.tracking import untracked
from wsgi_metrics.types import EXCEPTION_KEY, Environ

#: Where the signal handler leaves the route of a request whose exception propagated.
ROUTE_KEY = "wsgi_metrics.flask.route"


class FlaskRoutes:
    """A ``route_resolver`` for one Flask app: the matched rule as Flask wrote it, blueprint
    ``url_prefix`` included (``/api/users/<int:user_id>``).

    ``None`` (unmatched) when no rule matched: 404s, 405s (Werkzeug does not say which rule
    the path matched), and strict-slash redirects.

    It also reports exceptions Flask turns into 500 responses (``got_request_exception``)
    in the environ, so the middleware counts them in the exceptions counter.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        # id(rule) -> (rule, what to answer for it): each rule is looked at once, when it
        # is first matched (its view's do_not_track mark included).
        self._rules: dict[int, tuple[object, str]] = {}
        # Blinker holds receivers weakly: the bound method lives as long as this object,
        # which the middleware keeps.
        got_request_exception.connect(self._on_exception, app)

    def __call__(self, environ: Environ) -> str | None:
        request = environ.get("werkzeug.request")
        if request is not None:
            rule = getattr(request, "url_rule", None)
            return None if rule is None else self._route(rule)
        route = environ.get(ROUTE_KEY)
        return route if isinstance(route, str) else None

    def _route(self, rule: Any) -> str:
        """The template of ``rule``, or the untracked route when its view is marked."""
        known = self._rules.get(id(rule))
        if known is not None and known[0] is rule:
            return known[1]
        view = self.app.view_functions.get(rule.endpoint)
        route = UNTRACKED_ROUTE if untracked(view) else str(rule.rule)
        if len(self._rules) > 10_000:  # rules come and go only in test suites
            self._rules.clear()
        self._rules[id(rule)] = (rule, route)
        return route

    def _on_exception(self, sender: Flask, exception: BaseException, **extra: Any) -> None:
        del sender, extra
        environ = current_request.environ
        environ[EXCEPTION_KEY] = exception
        rule = current_request.url_rule
        if rule is not None:
            environ[ROUTE_KEY] = self._route(rule)


def resolver_for(app: object) -> FlaskRoutes | None:
    """A :class:`FlaskRoutes` when ``app`` is a Flask app or its bound ``wsgi_app``."""
    owner = getattr(app, "__self__", app)
    if isinstance(owner, Flask):
        return FlaskRoutes(owner)
    return None

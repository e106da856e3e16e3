"""The WSGI type aliases the package uses (PEP 3333 shapes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from asgi_metrics.core.keys import WSGI_EXCEPTION_KEY

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
RouteResolver = Callable[[Environ], "str | None"]

#: An app or framework integration that turns an exception into a 500 response itself
#: (so the middleware never sees it raised) can put the exception here to have it counted
#: in the exceptions counter. :mod:`wsgi_metrics.flask` does this for Flask.
EXCEPTION_KEY = WSGI_EXCEPTION_KEY

"""Correlation IDs in the ASGI middleware: the 500 for unhandled exceptions.

The ID itself is chosen by :meth:`~asgi_metrics.correlation.ids.CorrelationIds.for_request`
(the rule every adapter calls) and added to the response start by
:func:`~asgi_metrics.asgi.headers.with_header`.

Unhandled exceptions with ``correlation_id=True``: the 500 for them is normally sent by a
layer *outside* this middleware (Starlette's ``ServerErrorMiddleware``, which
``add_middleware`` always keeps outermost, or the server), through a ``send`` this middleware
never sees, so it could not carry the header. So when the response has not started, this
middleware sends that 500 itself (the same plain ``Internal Server Error`` Starlette and
uvicorn send), with the header, then re-raises: the outer layer sees the response started
and only logs. It steps aside when the Starlette app in ``scope["app"]`` would answer
differently (``debug=True`` or a handler for ``500``/``Exception``); those handlers can read
:func:`~asgi_metrics.get_correlation_id`, which stays set after an unhandled exception.
"""

from __future__ import annotations

from asgi_metrics.asgi.headers import Header, with_header
from asgi_metrics.asgi.types import Message, Scope, Send

_ERROR_BODY = b"Internal Server Error"
_ERROR_START: Message = {
    "type": "http.response.start",
    "status": 500,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_ERROR_BODY)).encode()),
    ],
}


def _outer_layer_answers(scope: Scope) -> bool:
    """Whether the Starlette app around us answers unhandled exceptions its own way."""
    app = scope.get("app")
    if app is None:
        return False
    if getattr(app, "debug", False):
        return True
    handlers = getattr(app, "exception_handlers", None) or {}
    return 500 in handlers or Exception in handlers


async def answer_error(scope: Scope, send: Send, id_header: Header) -> None:
    """Send the 500 for an unhandled exception, with the correlation header (see the
    module docs for why here)."""
    if _outer_layer_answers(scope):
        return
    try:
        await send(with_header(_ERROR_START, id_header))
        await send({"type": "http.response.body", "body": _ERROR_BODY})
    except Exception:  # the client is gone, or the server refuses: its own 500 stands
        pass

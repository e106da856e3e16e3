"""Correlation IDs in the ASGI middleware: choosing the ID, adding the response header, and
the 500 for unhandled exceptions.

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

from asgi_metrics.asgi.types import ASGIApp, Message, Receive, Scope, Send
from asgi_metrics.core.failures import FailureLog
from asgi_metrics.correlation.ids import CorrelationIds
from asgi_metrics.otel.span_link import link_span
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE
from asgi_metrics.otel.spans import sampled_span

_ERROR_BODY = b"Internal Server Error"
_ERROR_START: Message = {
    "type": "http.response.start",
    "status": 500,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_ERROR_BODY)).encode()),
    ],
}


def with_header(message: Message, header: tuple[bytes, bytes]) -> Message:
    """``message`` (an ``http.response.start``) with ``header`` added, unless the app set
    that header itself. A copy: the app's message object is not changed."""
    headers = message.get("headers") or ()
    name = header[0]
    size = len(name)
    for key, _ in headers:
        # The length first: most names differ in it, and it costs no copy.
        if len(key) == size and key.lower() == name:
            return message
    started: Message = dict(message)  # cheaper than {**message, ...} on this hot path
    started["headers"] = [*headers, header]
    return started


def _outer_layer_answers(scope: Scope) -> bool:
    """Whether the Starlette app around us answers unhandled exceptions its own way."""
    app = scope.get("app")
    if app is None:
        return False
    if getattr(app, "debug", False):
        return True
    handlers = getattr(app, "exception_handlers", None) or {}
    return 500 in handlers or Exception in handlers


def correlation_id_for(scope: Scope, correlation: CorrelationIds, raw: object) -> str:
    """The correlation ID for one request whose header held ``raw`` (``None``: no header),
    in the cases the middleware does not decide inline: an invalid or untrusted incoming
    ID, a configured validator, or the trace ID to use when none came in."""
    incoming = None if raw is None else bytes(raw).decode("latin-1")  # type: ignore[call-overload]
    client = scope.get("client")
    return correlation.for_request(incoming, client[0] if client else None)


async def serve_uncounted(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    id_header: tuple[bytes, bytes],
    failures: FailureLog,
) -> None:
    """An excluded path: not counted, but it still gets its correlation ID (on the
    response, and on the span when OpenTelemetry is there)."""
    if OTEL_AVAILABLE:
        try:
            span = sampled_span()
            if span is not None:
                link_span(span, id_header[1].decode("ascii"), False, failures)
        except Exception as exc:
            failures.report("setting the correlation ID span attribute", exc)
    started = False

    async def send_with_id(message: Message) -> None:
        nonlocal started
        if message.get("type") == "http.response.start":
            started = True
            message = with_header(message, id_header)
        await send(message)

    try:
        await app(scope, receive, send_with_id)
    except Exception:
        if not started:
            await answer_error(scope, send, id_header)
        raise


async def answer_error(scope: Scope, send: Send, id_header: tuple[bytes, bytes]) -> None:
    """Send the 500 for an unhandled exception, with the correlation header (see the
    module docs for why here)."""
    if _outer_layer_answers(scope):
        return
    try:
        await send(with_header(_ERROR_START, id_header))
        await send({"type": "http.response.body", "body": _ERROR_BODY})
    except Exception:  # the client is gone, or the server refuses: its own 500 stands
        pass

"""ASGI headers: finding a request header, adding one to a response start.

ASGI servers hand header names over lower-cased (the spec requires it), so a lookup is a
plain comparison of bytes.
"""

from __future__ import annotations

from asgi_metrics.asgi.types import Message, Scope
from asgi_metrics.core.rules import declared_length, has_header

Header = tuple[bytes, bytes]


def request_header(scope: Scope, name: bytes) -> bytes | None:
    """The raw value of the first request header called ``name`` (lower case), or ``None``."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def declared_size(scope: Scope) -> int | None:
    """The body size the request's ``Content-Length`` declares; ``None`` without one, or
    when repeated headers disagree or one is not a valid size."""
    size = None
    try:
        for key, value in scope.get("headers") or ():
            if key == b"content-length":
                declared = declared_length(value)
                if declared is None or (size is not None and declared != size):
                    return None
                size = declared
    except (TypeError, ValueError):  # malformed headers: count the body instead
        return None
    return size


def with_header(message: Message, header: Header) -> Message:
    """``message`` (an ``http.response.start``) with ``header`` added, unless the app set
    that header itself. A copy: the app's message object is not changed."""
    headers = message.get("headers") or ()
    if has_header(headers, header[0]):
        return message
    # dict.copy(), the cheap clone, when it is a dict (it always is in practice; ASGI only
    # asks for a mapping).
    started: Message = message.copy() if type(message) is dict else dict(message)
    started["headers"] = [*headers, header]
    return started

"""Request-derived labels in ASGI: how the core's label sources read an ASGI request (its
scope) and response (the ``http.response.start`` message the app sent)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgi_metrics.asgi.headers import request_header
from asgi_metrics.asgi.types import Message, Scope


def _text(value: object) -> str | None:
    return value.decode("latin-1") if isinstance(value, bytes) else None


def _pairs(headers: Any) -> Iterable[tuple[str, str]]:
    for name, value in headers or ():
        if isinstance(name, bytes) and isinstance(value, bytes):
            yield name.decode("latin-1"), value.decode("latin-1")


class AsgiHeaders:
    """The :class:`~asgi_metrics.core.request_labels.HeaderAccess` of ASGI: names are
    lower-case bytes on both sides (servers lower-case request names; the app's response
    names are compared in any case)."""

    def compile(self, name: str, response: bool) -> bytes:
        return name.lower().encode("latin-1")

    def request_header(self, request: Scope, compiled: bytes) -> str | None:
        return _text(request_header(request, compiled))

    def response_header(self, response: Message | None, compiled: bytes) -> str | None:
        if response is None:
            return None
        for name, value in response.get("headers") or ():
            if isinstance(name, bytes) and name.lower() == compiled:
                return _text(value)
        return None

    def request_headers(self, request: Scope) -> Iterable[tuple[str, str]]:
        return _pairs(request.get("headers"))

    def response_headers(self, response: Message | None) -> Iterable[tuple[str, str]]:
        return () if response is None else _pairs(response.get("headers"))

"""Request-derived labels in ASGI: how the core's label sources read an ASGI request (its
scope) and response (the ``http.response.start`` message the app sent)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from asgi_metrics.asgi.headers import request_header
from asgi_metrics.asgi.types import Message, Scope
from asgi_metrics.core.request_labels import HeaderReader
from asgi_metrics.core.rules import header_value


def _text(value: object) -> str | None:
    return value.decode("latin-1") if type(value) is bytes else None


def _pairs(headers: Any) -> Iterable[tuple[str, str]]:
    for name, value in headers or ():
        if isinstance(name, bytes) and isinstance(value, bytes):
            yield name.decode("latin-1"), value.decode("latin-1")


class AsgiHeaders:
    """The :class:`~asgi_metrics.core.request_labels.HeaderAccess` of ASGI. Request header
    names arrive lower-cased (the spec requires it of servers); the app's response header
    names are compared in any case."""

    def reader(self, name: str, response: bool) -> HeaderReader:
        key = name.lower().encode("latin-1")
        if response:

            def from_response(scope: Scope, head: Message | None) -> str | None:
                if head is None:
                    return None
                return _text(header_value(head.get("headers") or (), key))

            return from_response

        def from_request(scope: Scope, head: Message | None) -> str | None:
            return _text(request_header(scope, key))

        return from_request

    def request_headers(self, request: Scope) -> Iterable[tuple[str, str]]:
        return _pairs(request.get("headers"))

    def response_headers(self, response: Message | None) -> Iterable[tuple[str, str]]:
        return () if response is None else _pairs(response.get("headers"))

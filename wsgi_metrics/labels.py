"""Request-derived labels in WSGI and Django: how the core's label sources read a WSGI
environ (or a Django request's ``META``, which has the same keys) and the response
headers the app started its response with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The two request headers CGI (and so WSGI) keeps without the HTTP_ prefix.
_UNPREFIXED = {"CONTENT_TYPE", "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """The environ key of the request header ``name`` (``X-Tenant`` -> ``HTTP_X_TENANT``)."""
    key = name.upper().replace("-", "_")
    return key if key in _UNPREFIXED else f"HTTP_{key}"


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _environ_pairs(environ: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    for key, value in list(environ.items()):
        if not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            yield key[5:].replace("_", "-").lower(), value
        elif key in _UNPREFIXED:
            yield key.replace("_", "-").lower(), value


class WsgiHeaders:
    """The :class:`~asgi_metrics.core.request_labels.HeaderAccess` of WSGI: the request is
    the environ, the response its ``start_response`` header list."""

    def compile(self, name: str, response: bool) -> str:
        return name.lower() if response else environ_key(name)

    def request_header(self, request: Mapping[str, Any], compiled: str) -> str | None:
        return _text(request.get(compiled))

    def response_header(
        self, response: Sequence[tuple[str, str]], compiled: str
    ) -> str | None:
        for name, value in response:
            if isinstance(name, str) and name.lower() == compiled:
                return _text(value)
        return None

    def request_headers(self, request: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        return _environ_pairs(request)

    def response_headers(
        self, response: Sequence[tuple[str, str]]
    ) -> Iterable[tuple[str, str]]:
        return [(n, v) for n, v in response if isinstance(n, str) and isinstance(v, str)]


class DjangoHeaders(WsgiHeaders):
    """The same for Django: the request is the ``HttpRequest`` (its ``META`` has the
    environ's keys under WSGI and ASGI alike), the response the ``HttpResponse``."""

    def request_header(self, request: Any, compiled: str) -> str | None:
        return _text(request.META.get(compiled))

    def response_header(self, response: Any, compiled: str) -> str | None:
        return None if response is None else _text(response.get(compiled))

    def request_headers(self, request: Any) -> Iterable[tuple[str, str]]:
        return _environ_pairs(request.META)

    def response_headers(self, response: Any) -> Iterable[tuple[str, str]]:
        return () if response is None else list(response.items())

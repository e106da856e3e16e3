"""Request-derived labels in WSGI and Django: how the core's label sources read a WSGI
environ (or a Django request's ``META``, which has the same keys) and the response
headers the app started its response with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from asgi_metrics.core.request_labels import HeaderReader
from asgi_metrics.core.rules import header_value

# The two request headers CGI (and so WSGI) keeps without the HTTP_ prefix.
_UNPREFIXED = {"CONTENT_TYPE", "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """The environ key of the request header ``name`` (``X-Tenant`` -> ``HTTP_X_TENANT``)."""
    key = name.upper().replace("-", "_")
    return key if key in _UNPREFIXED else f"HTTP_{key}"


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

    def reader(self, name: str, response: bool) -> HeaderReader:
        if response:
            lower = name.lower()

            def from_response(
                environ: Mapping[str, Any], headers: Sequence[tuple[str, str]]
            ) -> str | None:
                value = header_value(headers, lower)
                return value if type(value) is str else None

            return from_response
        key = environ_key(name)

        def from_request(environ: Mapping[str, Any], headers: Any) -> str | None:
            value = environ.get(key)
            return value if type(value) is str else None

        return from_request

    def request_headers(self, request: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
        return _environ_pairs(request)

    def response_headers(
        self, response: Sequence[tuple[str, str]]
    ) -> Iterable[tuple[str, str]]:
        return [(n, v) for n, v in response if isinstance(n, str) and isinstance(v, str)]


class DjangoHeaders(WsgiHeaders):
    """The same for Django: the request is the ``HttpRequest`` (its ``META`` has the
    environ's keys under WSGI and ASGI alike), the response the ``HttpResponse`` (or
    ``None``)."""

    def reader(self, name: str, response: bool) -> HeaderReader:
        if response:

            def from_response(request: Any, answer: Any) -> str | None:
                value = None if answer is None else answer.get(name)
                return value if type(value) is str else None

            return from_response
        key = environ_key(name)

        def from_request(request: Any, answer: Any) -> str | None:
            value = request.META.get(key)
            return value if type(value) is str else None

        return from_request

    def request_headers(self, request: Any) -> Iterable[tuple[str, str]]:
        return _environ_pairs(request.META)

    def response_headers(self, response: Any) -> Iterable[tuple[str, str]]:
        return () if response is None else list(response.items())

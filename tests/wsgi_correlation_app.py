"""A plain WSGI app for the gunicorn test of correlation IDs: ``/boom`` raises before
``start_response``, ``/stream`` streams its ID, ``/peek`` (outside the middleware) shows
what the worker thread's context still holds between requests."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from wsgi_metrics import MetricsMiddleware, get_correlation_id


def _inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("unhandled in plain WSGI")

    def body() -> Iterator[bytes]:
        for part in ("a", "b"):
            yield f"{part}={get_correlation_id()};".encode()

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


_metrics = MetricsMiddleware(_inner, registry=CollectorRegistry(), correlation_id=True)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/peek":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(get_correlation_id()).encode()]
    return _metrics(environ, start_response)

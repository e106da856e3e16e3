"""A plain WSGI app for the gunicorn tests of correlation IDs: ``/boom`` raises before
``start_response``, ``/stream`` streams its ID, ``/pid`` answers the worker's PID (a little
slowly, so concurrent requests spread over the workers), ``/peek`` (outside the middleware)
shows what the worker thread's context still holds between requests.

It draws a correlation ID at import, as an app might: with ``--preload`` the gunicorn master
then forks its workers holding a batch of pre-made IDs, which they must not hand out."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from asgi_metrics.correlation.request_ids import new_id
from wsgi_metrics import MetricsMiddleware, get_correlation_id

new_id()


def _inner(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("unhandled in plain WSGI")
    if environ["PATH_INFO"] == "/pid":
        time.sleep(0.02)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(os.getpid()).encode()]

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

"""Test-only Django URLs: views that report the correlation ID they see (sync and async,
plain and streaming) and ones that fail. Used with ``override_settings(ROOT_URLCONF=...)``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path

from wsgi_metrics import get_correlation_id

log = logging.getLogger("tests.django_app")


def echo(request: HttpRequest, n: int) -> HttpResponse:
    log.info("handling")
    return HttpResponse(get_correlation_id() or "-")


async def aecho(request: HttpRequest, n: int) -> HttpResponse:
    await asyncio.sleep(0)
    log.info("handling")
    return HttpResponse(get_correlation_id() or "-")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for part in ("a", "b"):
            log.info("chunk %s", part)
            yield f"{part}={get_correlation_id()};".encode()

    return StreamingHttpResponse(chunks())


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for part in ("a", "b"):
            await asyncio.sleep(0)
            log.info("chunk %s", part)
            yield f"{part}={get_correlation_id()};".encode()

    return StreamingHttpResponse(chunks())


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("sync failure")


async def aboom(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    raise RuntimeError("async failure")


urlpatterns = [
    path("echo/<int:n>/", echo),
    path("aecho/<int:n>/", aecho),
    path("stream/", stream),
    path("astream/", astream),
    path("boom/", boom),
    path("aboom/", aboom),
]

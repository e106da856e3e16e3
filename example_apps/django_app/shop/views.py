"""A couple of views: plain, 404 from a matched route, 403, one that raises, streaming,
and an async one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse


def item_list(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"items": [1, 2, 3]})


def item_detail(request: HttpRequest, pk: int) -> JsonResponse:
    if pk > 100:
        raise Http404("no such item")
    return JsonResponse({"id": pk})


def archive(request: HttpRequest, year: str) -> HttpResponse:
    return HttpResponse(f"archive {year}")


def private(request: HttpRequest) -> HttpResponse:
    raise PermissionDenied


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("example failure")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        for index in range(3):
            yield b"chunk %d\n" % index

    return StreamingHttpResponse(chunks(), content_type="text/plain")


async def async_view(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return HttpResponse("async")

"""Test-only Django URLs: streaming responses (a generator, a file) that tests may leave
unread. Used with ``override_settings(ROOT_URLCONF=...)``."""

from __future__ import annotations

import io
from collections.abc import Iterator

from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.urls import path

BODY = b"0123456789"


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield BODY[:5]
        yield BODY[5:]

    return StreamingHttpResponse(chunks())


def file(request: HttpRequest) -> FileResponse:
    return FileResponse(io.BytesIO(BODY))


urlpatterns = [
    path("stream/", stream),
    path("file/", file),
]

"""Test-only Django URLs for the request size tests: views that read the request body in
different ways and answer with what they read. Used with ``override_settings(ROOT_URLCONF=...)``."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path


def ignore(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"never read the body")


def body(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body)


def body_twice(request: HttpRequest) -> HttpResponse:
    # request.read() after request.body replays the cached bytes.
    first = request.body
    return HttpResponse(first + request.read())


def stream(request: HttpRequest) -> HttpResponse:
    parts = []
    while chunk := request.read(4):
        parts.append(chunk)
    return HttpResponse(b"".join(parts))


def lines(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"".join(line for line in request))


def form(request: HttpRequest) -> HttpResponse:
    return HttpResponse(",".join(f"{k}={v}" for k, v in request.POST.items()).encode())


urlpatterns = [
    path("ignore", ignore),
    path("body", body),
    path("body-twice", body_twice),
    path("stream", stream),
    path("lines", lines),
    path("form", form),
]

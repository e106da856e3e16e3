"""Test-only Django URLs and middleware for the request-derived labels, ``do_not_track`` and
the in-flight gauge by route (issue 13). Used with ``override_settings(ROOT_URLCONF=...)``;
the middleware by dotted path in ``MIDDLEWARE``, after ours."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from wsgi_metrics import do_not_track, set_label

#: Set by the stuck views when they are entered; they return once ``RELEASE`` is set.
ENTERED = threading.Event()
RELEASE = threading.Event()


class LabellingMiddleware:
    """A sync-only middleware after ours (under ASGI Django runs it in a thread) that knows
    the tenant from a header, as an authentication middleware would."""

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        tenant = request.META.get("HTTP_X_MIDDLEWARE_TENANT")
        if tenant is not None:
            set_label("tenant", tenant)
        return self.get_response(request)


def item(request: HttpRequest, pk: int) -> HttpResponse:
    return HttpResponse(f"item {pk}")


def assign(request: HttpRequest, tenant: str) -> HttpResponse:
    set_label("tenant", tenant)
    return HttpResponse("assigned")


class Assigning(View):
    def get(self, request: HttpRequest, tenant: str) -> HttpResponse:
        set_label("tenant", f"class-{tenant}")
        return HttpResponse("assigned by a class")


async def assign_async(request: HttpRequest, tenant: str) -> HttpResponse:
    await asyncio.sleep(0)
    set_label("tenant", f"async-{tenant}")
    return HttpResponse("assigned asynchronously")


def cache(request: HttpRequest, state: str) -> HttpResponse:
    response = HttpResponse("cached", status=201)
    response["X-Cache"] = state
    return response


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def upload(request: HttpRequest) -> HttpResponse:
    return HttpResponse(request.body)


def stream_before(request: HttpRequest) -> StreamingHttpResponse:
    set_label("tenant", "streamer")

    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingHttpResponse(chunks())


def stream_during(request: HttpRequest) -> StreamingHttpResponse:
    def chunks() -> Iterator[bytes]:
        yield b"a"
        set_label("tenant", "late")  # known once part of the body went out
        yield b"b"

    return StreamingHttpResponse(chunks())


async def stream_async(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"a"
        set_label("tenant", "late-async")
        yield b"b"

    return StreamingHttpResponse(chunks())


def stuck(request: HttpRequest, n: int) -> HttpResponse:
    ENTERED.set()
    assert RELEASE.wait(10)
    return HttpResponse("released")


async def stuck_async(request: HttpRequest, n: int) -> HttpResponse:
    ENTERED.set()
    assert await asyncio.to_thread(RELEASE.wait, 10)
    return HttpResponse("released")


# do_not_track, on functions and class-based views, in both orders with Django's decorators.


@do_not_track
def untracked(request: HttpRequest) -> HttpResponse:
    return HttpResponse("untracked")


@csrf_exempt
@do_not_track
def marked_then_wrapped(request: HttpRequest) -> HttpResponse:
    return HttpResponse("marked, then wrapped")


@do_not_track
@csrf_exempt
def wrapped_then_marked(request: HttpRequest) -> HttpResponse:
    return HttpResponse("wrapped, then marked")


@do_not_track
class UntrackedView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("untracked class")

    def post(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("untracked post")


class PlainView(View):
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse("plain class")


@do_not_track
def untracked_stream(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"a", b"b"]))


@do_not_track
async def untracked_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse("untracked async")


urlpatterns = [
    path("items/<int:pk>/", item),
    path("assign/<str:tenant>/", assign),
    path("class/<str:tenant>/", Assigning.as_view()),
    path("async/<str:tenant>/", assign_async),
    path("cache/<str:state>/", cache),
    path("boom/", boom),
    path("upload/", csrf_exempt(upload)),
    path("stream/before/", stream_before),
    path("stream/during/", stream_during),
    path("stream/async/", stream_async),
    path("stuck/<int:n>/", stuck),
    path("stuck-async/<int:n>/", stuck_async),
    path("private/function/", untracked),
    path("private/marked-then-wrapped/", marked_then_wrapped),
    path("private/wrapped-then-marked/", wrapped_then_marked),
    path("private/class/", UntrackedView.as_view()),
    path("private/as-view/", do_not_track(PlainView.as_view())),
    path("private/as-view-wrapped/", never_cache(do_not_track(PlainView.as_view()))),
    path("private/wrapped-as-view/", do_not_track(never_cache(PlainView.as_view()))),
    path("private/async/", untracked_async),
    path("private/stream/", untracked_stream),
    path("plain/", PlainView.as_view()),
]

"""Litestar through httpx's ASGI transport: ``MetricsMiddleware(Litestar(...))`` labels
every route by Litestar's own template, counts the exceptions Litestar answers with a
500 once, and refuses to sit in Litestar's per-route ``middleware=[...]``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Controller, Litestar, Request, Response, Router, asgi, get, post
from litestar.exceptions import (
    InternalServerException,
    NotFoundException,
    ServiceUnavailableException,
)
from litestar.middleware import ASGIMiddleware, DefineMiddleware
from litestar.response import Stream
from litestar.types import ASGIApp, Receive, Scope, Send

from asgi_metrics import UNMATCHED_ROUTE, ConfigurationError, MetricsMiddleware
from tests.support.asgi import wrap
from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)

pytestmark = pytest.mark.anyio

STREAM_PAUSE = 0.05  # seconds between the stream's parts


class Conflict(Exception):
    """Mapped to a 409 by the app's own exception handler: handled, not counted."""


def on_conflict(request: Request[Any, Any, Any], exc: Conflict) -> Response[str]:
    return Response("conflict", status_code=409)


# Path parameters read from the request, not the signature: the signature style Litestar
# prefers changed within 2.x, and the route is what matters here.
@get("/items/{item_id:int}")
async def get_item(request: Request[Any, Any, Any]) -> dict[str, int]:
    item_id: int = request.path_params["item_id"]
    if item_id > 100:
        raise NotFoundException()  # raised by a matched route: keeps its template
    return {"id": item_id}


@post("/items")
async def create_item() -> dict[str, str]:
    return {}


class Users(Controller):
    path = "/users"

    @get("/{user_id:str}/detail")
    async def detail(self, request: Request[Any, Any, Any]) -> str:
        return str(request.path_params["user_id"])


@asgi("/static", is_mount=True, copy_scope=True)
async def static(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"file"})


@get("/")
async def index() -> str:
    return "index"


@get("/boom")
async def boom() -> str:
    raise ValueError("boom")


@get("/internal")
async def internal() -> str:
    raise InternalServerException()


@get("/unavailable")
async def unavailable() -> str:
    raise ServiceUnavailableException()


@get("/conflict")
async def conflict() -> str:
    raise Conflict


@get("/stream")
async def stream() -> Stream:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(STREAM_PAUSE)
            yield b"part"

    return Stream(parts())


def make_app() -> Litestar:
    v1 = Router(path="/v1", route_handlers=[get_item, create_item, Users, static])
    api = Router(path="/api", route_handlers=[v1])
    return Litestar(
        route_handlers=[api, index, boom, internal, unavailable, conflict, stream],
        exception_handlers={Conflict: on_conflict},
        openapi_config=None,
    )


async def get_all(app: ASGIApp | MetricsMiddleware, requests: list[tuple[str, str]]) -> list[int]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [(await client.request(method, path)).status_code for method, path in requests]


async def scrape(app: MetricsMiddleware) -> dict[Any, float]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.text)


async def test_every_route_by_its_full_template() -> None:
    app = wrap(make_app())
    statuses = await get_all(app, [
        ("GET", "/api/v1/items/1"), ("GET", "/api/v1/items/2"), ("GET", "/api/v1/items/2/"),
        ("POST", "/api/v1/items"),
        ("GET", "/api/v1/users/ann/detail"),
        ("GET", "/api/v1/static/css/site.css"), ("GET", "/api/v1/static"),
        ("GET", "/"),
        ("GET", "/api/v1/items/500"),
    ])
    assert statuses == [200, 200, 200, 201, 200, 200, 200, 200, 404]
    assert requests_by_labels(await scrape(app)) == {
        # Litestar's template: prefixes in, parameter types out (as its Prometheus plugin
        # and OpenAPI schema show it). A trailing slash is the same route (no redirect).
        ("GET", "/api/v1/items/{item_id}", "200"): 3,
        ("POST", "/api/v1/items", "201"): 1,
        ("GET", "/api/v1/users/{user_id}/detail", "200"): 1,
        ("GET", "/api/v1/static", "200"): 2,  # a mount: its full path, however deep
        ("GET", "/", "200"): 1,
        ("GET", "/api/v1/items/{item_id}", "404"): 1,  # raised by the matched route
    }


async def test_no_route_is_unmatched_404_and_405() -> None:
    app = wrap(make_app())
    statuses = await get_all(app, [
        ("GET", "/nowhere"), ("GET", "/api/v1/items/not-a-number"),
        ("DELETE", "/api/v1/items/1"), ("GET", "/api/v1/items/1"),
    ])
    assert statuses == [404, 404, 405, 200]
    # Litestar's router writes no route for a 405 (it raises before choosing a handler).
    assert requests_by_labels(await scrape(app)) == {
        ("GET", UNMATCHED_ROUTE, "404"): 2,
        ("DELETE", UNMATCHED_ROUTE, "405"): 1,
        ("GET", "/api/v1/items/{item_id}", "200"): 1,
    }


async def test_exceptions_litestar_answers_with_500_counted_once_with_type_and_route() -> None:
    app = wrap(make_app())
    statuses = await get_all(app, [
        ("GET", "/boom"), ("GET", "/boom"), ("GET", "/internal"),
        ("GET", "/unavailable"), ("GET", "/conflict"), ("GET", "/nowhere"),
    ])
    assert statuses == [500, 500, 500, 503, 409, 404]
    samples = await scrape(app)
    assert exceptions_by_labels(samples) == {
        ("GET", "/boom", "ValueError"): 2,
        ("GET", "/internal", "InternalServerException"): 1,
    }
    assert requests_by_labels(samples) == {
        ("GET", "/boom", "500"): 2,
        ("GET", "/internal", "500"): 1,
        ("GET", "/unavailable", "503"): 1,
        ("GET", "/conflict", "409"): 1,
        ("GET", UNMATCHED_ROUTE, "404"): 1,
    }


async def test_litestars_own_500_response_is_unchanged() -> None:
    async def answer(app: Any) -> tuple[int, str | None, bytes]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom")
        return response.status_code, response.headers.get("content-type"), response.content

    bare = await answer(make_app())
    app = wrap(make_app())
    wrapped = await answer(app)
    assert bare[0] == 500
    assert wrapped == bare
    assert exceptions_by_labels(await scrape(app)) == {("GET", "/boom", "ValueError"): 1}


async def test_users_route_resolver_still_counts_litestars_500s() -> None:
    app = wrap(make_app(), route_resolver=lambda scope: "/mine")
    assert await get_all(app, [("GET", "/boom")]) == [500]
    assert exceptions_by_labels(await scrape(app)) == {("GET", "/mine", "ValueError"): 1}


async def test_streaming_response_timed_to_its_last_byte_and_in_flight_back_to_zero() -> None:
    app = wrap(make_app())
    assert await get_all(app, [("GET", "/stream")]) == [200]
    samples = await scrape(app)
    assert requests_by_labels(samples) == {("GET", "/stream", "200"): 1}
    assert duration_sum(samples, "GET", "/stream", "200") >= 3 * STREAM_PAUSE
    assert in_flight(samples) == 0


async def test_a_wrapped_app_behind_other_middleware_is_still_found() -> None:
    class Outer:
        def __init__(self, app: Litestar) -> None:
            self.app = app

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await self.app(scope, receive, send)

    app = wrap(Outer(make_app()))
    assert await get_all(app, [("GET", "/api/v1/items/7")]) == [200]
    assert requests_by_labels(await scrape(app)) == {("GET", "/api/v1/items/{item_id}", "200"): 1}


class Passing:
    """A plain ASGI middleware class, as Litestar takes them: it keeps the next app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class NewStyle(ASGIMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        await next_app(scope, receive, send)


@pytest.mark.parametrize(
    "middleware",
    [
        [MetricsMiddleware],
        [DefineMiddleware(MetricsMiddleware, namespace="app")],
        [MetricsMiddleware, Passing],
        [MetricsMiddleware, NewStyle()],
        [Passing, MetricsMiddleware],
    ],
    ids=["alone", "define-middleware", "over-a-class", "over-asgi-middleware", "under"],
)
def test_in_litestars_middleware_list_it_refuses_to_start(middleware: list[Any]) -> None:
    with pytest.raises(ConfigurationError, match=r"app = MetricsMiddleware\(Litestar"):
        Litestar(route_handlers=[index], middleware=middleware, openapi_config=None)


async def test_a_server_root_path_is_not_part_of_the_template() -> None:
    app = wrap(make_app())
    transport = httpx.ASGITransport(app=app, root_path="/proxy")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/proxy/api/v1/items/3")).status_code == 200
        samples = parse_samples((await client.get("/proxy/metrics")).text)
    assert requests_by_labels(samples) == {("GET", "/api/v1/items/{item_id}", "200"): 1}

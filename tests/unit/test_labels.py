"""Bounded labels: methods, routes of plain ASGI apps, resolvers; lookup cost."""

from __future__ import annotations

import random
import string
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

import asgi_metrics.routes.starlette as starlette_routes
from asgi_metrics import OTHER_METHOD, UNMATCHED_ROUTE
from asgi_metrics.core.labels import KNOWN_METHODS
from tests.support.asgi import drive, get_all, http_scope, scrape, wrap
from tests.support.scrape import REQUEST, request_count, routes, samples

pytestmark = pytest.mark.anyio


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def raw_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_random_method_tokens_add_at_most_one_series() -> None:
    app = wrap(Starlette(routes=[Route("/", hello, methods=list(KNOWN_METHODS))]))
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
    tokens = set()
    while len(tokens) < 10_000:
        token = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        if token not in KNOWN_METHODS:
            tokens.add(token)
    for token in tokens:
        messages = await drive(app, http_scope("/", method=token))
        assert messages[0]["status"] == 405
    families = await scrape(app)
    series = samples(families, REQUEST)
    # The scrape itself is not counted: exactly one series, for every one of the tokens.
    assert series == [({"method": OTHER_METHOD, "route": "/", "status": "405"}, 10_000.0)]
    assert {labels["method"] for labels, _ in samples(families, "http_requests_in_flight")} <= {
        OTHER_METHOD
    }


async def test_known_methods_keep_their_value_and_are_case_sensitive() -> None:
    app = wrap(Starlette(routes=[Route("/", hello, methods=["GET", "POST", "PATCH"])]))
    for method in ("GET", "POST", "PATCH", "get", "Post"):
        await drive(app, http_scope("/", method=method))
    families = await scrape(app)
    assert request_count(families, "/", "GET") == 1
    assert request_count(families, "/", "POST") == 1
    assert request_count(families, "/", "PATCH") == 1
    assert request_count(families, "/", OTHER_METHOD, "405") == 2


async def test_plain_asgi_app_is_unmatched() -> None:
    app = wrap(raw_app)
    assert await get_all(app, ["/a", "/b/c", "/users/123"]) == [200, 200, 200]
    families = await scrape(app)
    assert samples(families, REQUEST) == [
        ({"method": "GET", "route": UNMATCHED_ROUTE, "status": "200"}, 3.0)
    ]


async def test_route_resolver_names_the_route_of_a_plain_asgi_app() -> None:
    def resolver(scope: Any) -> str | None:
        return "/users/{id}" if scope["path"].startswith("/users/") else None

    app = wrap(raw_app, route_resolver=resolver)
    assert await get_all(app, ["/users/1", "/users/2", "/other"]) == [200, 200, 200]
    families = await scrape(app)
    assert request_count(families, "/users/{id}") == 2
    assert request_count(families, UNMATCHED_ROUTE) == 1


async def test_route_resolver_replaces_the_builtin_lookup() -> None:
    app = wrap(Starlette(routes=[Route("/x/{y}", hello)]), route_resolver=lambda scope: "custom")
    assert await get_all(app, ["/x/1"]) == [200]
    assert routes(await scrape(app)) == {"custom"}


def counting_index(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    built: list[int] = []
    original = starlette_routes._Index

    class CountingIndex(original):  # type: ignore[misc, valid-type]
        def __init__(self, router: Any) -> None:
            built.append(1)
            super().__init__(router)

    monkeypatch.setattr(starlette_routes, "_Index", CountingIndex)
    return built


async def test_route_index_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    built = counting_index(monkeypatch)
    api = FastAPI()
    router = APIRouter()

    @router.get("/items/{item_id}")
    def item(item_id: int) -> int:
        return item_id

    api.include_router(router, prefix="/a")
    api.include_router(router, prefix="/b")
    api.add_route("/plain/{p}", hello)
    api.mount("/sub/{s}", Starlette(routes=[Route("/r/{q}", hello)]))
    app = wrap(api)
    paths = ["/a/items/1", "/b/items/2", "/plain/x", "/sub/1/r/2", "/nope", "/sub/1/nope"] * 20
    statuses = await get_all(app, paths)
    assert statuses.count(404) == 40
    assert len(built) == 1
    families = await scrape(app)
    assert request_count(families, "/a/items/{item_id}") == 20
    assert request_count(families, "/b/items/{item_id}") == 20
    assert request_count(families, "/plain/{p}") == 20
    assert request_count(families, "/sub/{s}/r/{q}") == 20
    assert request_count(families, UNMATCHED_ROUTE, status="404") == 40


class CountingRoute(Route):
    calls = 0

    def matches(self, scope: Any) -> Any:
        type(self).calls += 1
        return super().matches(scope)


async def test_middleware_does_not_rerun_route_matching() -> None:
    def build() -> Starlette:
        return Starlette(
            routes=[
                CountingRoute("/first/{a}", hello),
                Mount("/m/{b}", routes=[CountingRoute("/second/{c}", hello)]),
                CountingRoute("/third", hello, methods=["POST"]),
            ]
        )

    paths = ["/first/1", "/m/2/second/3", "/m/2/nothing", "/third", "/none"] * 10

    CountingRoute.calls = 0
    await get_all(build(), paths)
    bare_calls = CountingRoute.calls

    CountingRoute.calls = 0
    app = wrap(build())
    await get_all(app, paths)
    assert CountingRoute.calls == bare_calls
    families = await scrape(app)
    assert request_count(families, "/first/{a}") == 10
    assert request_count(families, "/m/{b}/second/{c}") == 10
    assert request_count(families, "/third", status="405") == 10

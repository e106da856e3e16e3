"""The ``route`` label is the full route template, never a raw path."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from asgi_metrics import UNMATCHED_ROUTE
from tests.support.asgi import client, drive, get_all, http_scope, scrape, wrap
from tests.support.scrape import REQUEST, request_count, routes, samples

pytestmark = pytest.mark.anyio


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


def fastapi_app() -> FastAPI:
    items = APIRouter()

    @items.get("/items/{item_id}")
    def get_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @items.post("/items")
    def create_item() -> dict[str, str]:
        return {}

    deeper = APIRouter()

    @deeper.get("/notes/{note_id}")
    def get_note(note_id: str) -> str:
        return note_id

    items.include_router(deeper, prefix="/users/{user_id}")
    app = FastAPI()
    app.include_router(items, prefix="/v1")
    app.include_router(items, prefix="/v2")

    @app.get("/")
    def root() -> str:
        return "root"

    return app


async def test_fastapi_include_router_prefixes_nested_and_included_twice() -> None:
    app = wrap(fastapi_app())
    statuses = await get_all(
        app,
        [
            "/v1/items/1",
            "/v1/items/2",
            "/v2/items/3",
            "/v1/users/u1/notes/n1",
            "/v2/users/u2/notes/n2",
            "/v2/users/u3/notes/n3",
            "/",
        ],
    )
    assert statuses == [200] * 7
    families = await scrape(app)
    assert request_count(families, "/v1/items/{item_id}") == 2
    assert request_count(families, "/v2/items/{item_id}") == 1
    assert request_count(families, "/v1/users/{user_id}/notes/{note_id}") == 1
    assert request_count(families, "/v2/users/{user_id}/notes/{note_id}") == 2
    assert request_count(families, "/") == 1
    assert routes(families) == {
        "/v1/items/{item_id}",
        "/v2/items/{item_id}",
        "/v1/users/{user_id}/notes/{note_id}",
        "/v2/users/{user_id}/notes/{note_id}",
        "/",
    }


async def test_fastapi_405_on_known_path_is_labelled_with_its_template() -> None:
    app = wrap(fastapi_app())
    assert await get_all(app, ["/v2/items/1"], method="DELETE") == [405]
    assert await get_all(app, ["/v1/items"], method="GET") == [405]
    families = await scrape(app)
    assert request_count(families, "/v2/items/{item_id}", "DELETE", "405") == 1
    assert request_count(families, "/v1/items", "GET", "405") == 1
    assert routes(families) == {"/v2/items/{item_id}", "/v1/items"}


async def test_starlette_405_on_known_path() -> None:
    app = wrap(Starlette(routes=[Route("/things/{thing_id}", hello, methods=["GET"])]))
    assert await get_all(app, ["/things/9"], method="POST") == [405]
    families = await scrape(app)
    assert request_count(families, "/things/{thing_id}", "POST", "405") == 1


async def test_nested_mounts_are_joined() -> None:
    inner = Router(routes=[Route("/files/{name}", hello)])
    app = Starlette(
        routes=[
            Mount("/api", routes=[Mount("/v1/{org}", routes=[Mount("/store", app=inner)])]),
        ]
    )
    app = wrap(app)
    assert await get_all(app, ["/api/v1/acme/store/files/a.txt"]) == [200]
    families = await scrape(app)
    assert routes(families) == {"/api/v1/{org}/store/files/{name}"}


async def test_mounted_sub_application_with_parameter_in_prefix() -> None:
    sub = Starlette(routes=[Route("/items/{item_id}", hello)])
    app = Starlette(routes=[Mount("/tenants/{tenant_id}", app=sub)])
    app = wrap(app)
    assert await get_all(app, ["/tenants/t1/items/1", "/tenants/t2/items/2"]) == [200, 200]
    families = await scrape(app)
    assert request_count(families, "/tenants/{tenant_id}/items/{item_id}") == 2
    assert routes(families) == {"/tenants/{tenant_id}/items/{item_id}"}


async def test_sub_application_mounted_in_fastapi() -> None:
    sub = Starlette(routes=[Route("/items/{item_id}", hello)])
    api = FastAPI()
    api.mount("/tenants/{tenant_id}", sub)
    app = wrap(api)
    assert await get_all(app, ["/tenants/t1/items/1", "/tenants/t1/nothing"]) == [200, 404]
    families = await scrape(app)
    assert request_count(families, "/tenants/{tenant_id}/items/{item_id}") == 1
    assert request_count(families, UNMATCHED_ROUTE, status="404") == 1
    assert len(families[REQUEST.removesuffix("_total")].samples) == 2


async def test_root_path_is_not_part_of_the_template() -> None:
    sub = Starlette(routes=[Route("/items/{item_id}", hello)])
    app = wrap(
        Starlette(
            routes=[Route("/users/{user_id}", hello), Mount("/tenants/{tenant_id}", app=sub)]
        )
    )
    # What uvicorn --root-path /proxy sends: the path includes the root path.
    for path in ("/proxy/users/1", "/proxy/tenants/t/items/2"):
        messages = await drive(app, http_scope(path, root_path="/proxy"))
        assert messages[0]["status"] == 200
    families = await scrape(app)
    assert routes(families) == {"/users/{user_id}", "/tenants/{tenant_id}/items/{item_id}"}


async def test_root_path_with_fastapi_included_router_twice() -> None:
    app = wrap(fastapi_app())
    for path in ("/proxy/v1/items/1", "/proxy/v2/items/1", "/proxy/v2/users/u/notes/n"):
        messages = await drive(app, http_scope(path, root_path="/proxy"))
        assert messages[0]["status"] == 200
    families = await scrape(app)
    assert routes(families) == {
        "/v1/items/{item_id}",
        "/v2/items/{item_id}",
        "/v2/users/{user_id}/notes/{note_id}",
    }


async def test_plain_starlette_route_inside_fastapi() -> None:
    api = FastAPI()
    api.router.routes.append(Route("/plain/{name}", hello))
    api.add_route("/added/{name}", hello)

    @api.get("/api/{x}")
    def endpoint(x: str) -> str:
        return x

    app = wrap(api)
    assert await get_all(app, ["/plain/a", "/added/b", "/api/c"]) == [200, 200, 200]
    families = await scrape(app)
    assert routes(families) == {"/plain/{name}", "/added/{name}", "/api/{x}"}


async def test_plain_starlette_route_inside_included_router() -> None:
    router = APIRouter()
    router.add_route("/plain/{name}", hello)
    api = FastAPI()
    api.include_router(router, prefix="/p1")
    api.include_router(router, prefix="/p2")
    app = wrap(api)
    assert await get_all(app, ["/p1/plain/a", "/p2/plain/b", "/p2/plain/c"]) == [200] * 3
    families = await scrape(app)
    assert request_count(families, "/p1/plain/{name}") == 1
    assert request_count(families, "/p2/plain/{name}") == 2


async def test_routes_added_after_the_first_request() -> None:
    api = FastAPI()

    @api.get("/first")
    def first() -> str:
        return "1"

    app = wrap(api)
    assert await get_all(app, ["/first", "/later/1"]) == [200, 404]

    @api.get("/later/{n}")
    def later(n: int) -> int:
        return n

    late_router = APIRouter()

    @late_router.get("/thing/{t}")
    def thing(t: str) -> str:
        return t

    api.include_router(late_router, prefix="/late")
    api.router.routes.append(Route("/starlette-late/{s}", hello))
    statuses = await get_all(app, ["/later/2", "/late/thing/x", "/starlette-late/y"])
    assert statuses == [200, 200, 200]
    families = await scrape(app)
    assert request_count(families, "/first") == 1
    assert request_count(families, UNMATCHED_ROUTE, status="404") == 1
    assert request_count(families, "/later/{n}") == 1
    assert request_count(families, "/late/thing/{t}") == 1
    assert request_count(families, "/starlette-late/{s}") == 1


async def test_starlette_routes_added_after_the_first_request() -> None:
    star = Starlette(routes=[Route("/a", hello)])
    app = wrap(star)
    assert await get_all(app, ["/a"]) == [200]
    star.router.routes.append(Route("/b/{x}", hello))
    star.router.routes.append(Mount("/m/{y}", routes=[Route("/c", hello)]))
    assert await get_all(app, ["/b/1", "/m/2/c"]) == [200, 200]
    families = await scrape(app)
    assert routes(families) == {"/a", "/b/{x}", "/m/{y}/c"}


async def test_mounted_opaque_apps_are_labelled_with_the_mount_template(
    tmp_path: Any,
) -> None:
    (tmp_path / "app.css").write_text("body {}")

    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"raw"})

    api = FastAPI()
    api.mount("/static", StaticFiles(directory=tmp_path))
    api.mount("/raw/{tenant}", raw_asgi)
    app = wrap(api)
    statuses = await get_all(app, ["/static/app.css", "/static/missing.css", "/raw/t/any/thing"])
    assert statuses == [200, 404, 200]
    families = await scrape(app)
    assert request_count(families, "/static/{path:path}") == 1
    assert request_count(families, "/static/{path:path}", status="404") == 1
    assert request_count(families, "/raw/{tenant}/{path:path}") == 1


async def test_mounted_router_that_matched_nothing_is_unmatched() -> None:
    app = wrap(
        Starlette(
            routes=[
                Mount("/api", routes=[Route("/users", hello)]),
                Mount("/sub", app=Starlette(routes=[Route("/x", hello)])),
            ]
        )
    )
    assert await get_all(app, ["/api/nothing", "/sub/nothing", "/api/users"]) == [404, 404, 200]
    families = await scrape(app)
    assert request_count(families, UNMATCHED_ROUTE, status="404") == 2
    assert routes(families) == {UNMATCHED_ROUTE, "/api/users"}


async def test_unmatched_requests_never_use_the_raw_path() -> None:
    paths = ["/nope", "/v1/items/1/", "/exact", "/m/x/", "/m/nothing", "/secret/token/123"]
    api = fastapi_app()
    star = Starlette(routes=[Route("/exact/", hello), Mount("/m", routes=[Route("/x", hello)])])
    for inner in (api, star):
        app = wrap(inner)
        async with client(app) as http:
            statuses = [(await http.get(path)).status_code for path in paths]
        assert set(statuses) <= {307, 404}, statuses
        families = await scrape(app)
        assert routes(families) == {UNMATCHED_ROUTE}
        total = sum(value for _, value in samples(families, REQUEST))
        assert total == len(paths)


async def test_trailing_slash_redirect_is_unmatched() -> None:
    app = wrap(Starlette(routes=[Route("/users", hello)]))
    async with client(app) as http:
        response = await http.get("/users/", follow_redirects=False)
    assert response.status_code == 307
    families = await scrape(app)
    assert request_count(families, UNMATCHED_ROUTE, status="307") == 1
    assert routes(families) == {UNMATCHED_ROUTE}


async def test_late_route_sharing_an_endpoint_with_an_earlier_one() -> None:
    # FastAPI does not put plain Starlette routes in scope["route"]; only the endpoint
    # tells them apart, and here two routes share one endpoint, the second added late.
    api = FastAPI()
    api.add_route("/a", hello)
    app = wrap(api)
    assert await get_all(app, ["/a"]) == [200]
    api.add_route("/b/{x}", hello)
    assert await get_all(app, ["/b/1", "/b/2", "/a"]) == [200, 200, 200]
    families = await scrape(app)
    assert request_count(families, "/a") == 2
    assert request_count(families, "/b/{x}") == 2


async def test_catch_all_routes_keep_their_template() -> None:
    # A route (not a mount) whose template ends in {path:path} is still a matched route.
    api = FastAPI()

    @api.get("/docs-files/{path:path}")
    def docs_file(path: str) -> str:
        return path

    api.add_route("/raw/{path:path}", hello)
    star = Starlette(routes=[Route("/files/{path:path}", hello)])
    for inner, paths, template in (
        (star, ["/files/a/b.txt", "/files/c"], "/files/{path:path}"),
        (api, ["/docs-files/x/y", "/docs-files/z"], "/docs-files/{path:path}"),
        (api, ["/raw/1/2", "/raw/3"], "/raw/{path:path}"),
    ):
        app = wrap(inner)
        assert await get_all(app, paths) == [200, 200]
        families = await scrape(app)
        assert routes(families) == {template}
        assert request_count(families, template) == 2

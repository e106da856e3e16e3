"""do_not_track, in_flight_by_route and labels through real Litestar, Quart and Falcon
(ASGI): the same rules as for Starlette, read from each framework's own routing."""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi
import httpx
import pytest
from litestar import Litestar, get
from prometheus_client import CollectorRegistry
from quart import Quart

from asgi_metrics import MetricsMiddleware, do_not_track, from_header
from tests.support.scrape import IN_FLIGHT, REQUEST, parse_families, sample, samples

pytestmark = pytest.mark.anyio


def wrap(app: Any, **options: Any) -> MetricsMiddleware:
    return MetricsMiddleware(app, registry=CollectorRegistry(), **options)


async def scrape(app: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    return parse_families(response.text)


class Gate:
    """A request held inside its view until the test releases it."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def hold(self) -> None:
        self.entered.set()
        await asyncio.wait_for(self.release.wait(), 10)


def litestar_app(gate: Gate) -> Any:
    @get("/items/{item_id:int}")
    async def item(item_id: int) -> str:
        return str(item_id)

    @do_not_track
    @get("/health")
    async def health() -> str:
        return "ok"

    @get("/ready")
    @do_not_track
    async def ready() -> str:
        return "ok"

    @get("/stuck/{n:int}")
    async def stuck(n: int) -> str:
        await gate.hold()
        return "done"

    return Litestar(route_handlers=[item, health, ready, stuck])


def quart_app(gate: Gate) -> Any:
    app = Quart(__name__)

    @app.get("/items/<int:item_id>")
    async def item(item_id: int) -> str:
        return str(item_id)

    @app.get("/health")
    @do_not_track
    async def health() -> str:
        return "ok"

    @app.get("/stuck/<int:n>")
    async def stuck(n: int) -> str:
        await gate.hold()
        return "done"

    app.asgi_app = wrap(app.asgi_app, in_flight_by_route=True,  # type: ignore[method-assign]
                        labels={"tenant": from_header("X-Tenant")})
    return app


def falcon_app(gate: Gate) -> Any:
    class Item:
        async def on_get(self, req: Any, resp: Any, item_id: int) -> None:
            resp.text = str(item_id)

    @do_not_track
    class Health:
        async def on_get(self, req: Any, resp: Any) -> None:
            resp.text = "ok"

    class Stuck:
        async def on_get(self, req: Any, resp: Any, n: int) -> None:
            await gate.hold()
            resp.text = "done"

    app = falcon.asgi.App()
    app.add_route("/items/{item_id:int}", Item())
    app.add_route("/health", Health())
    app.add_route("/stuck/{n:int}", Stuck())
    return app


@pytest.mark.parametrize("framework", ["litestar", "quart", "falcon"])
async def test_do_not_track_in_flight_by_route_and_labels(framework: str) -> None:
    gate = Gate()
    if framework == "quart":
        app = quart_app(gate)
        stuck_route, item_route = "/stuck/<int:n>", "/items/<int:item_id>"
    elif framework == "litestar":
        app = wrap(litestar_app(gate), in_flight_by_route=True,
                   labels={"tenant": from_header("X-Tenant")})
        stuck_route, item_route = "/stuck/{n}", "/items/{item_id}"  # as Litestar writes them
    else:
        app = wrap(falcon_app(gate), in_flight_by_route=True,
                   labels={"tenant": from_header("X-Tenant")})
        stuck_route, item_route = "/stuck/{n:int}", "/items/{item_id:int}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for path in ("/items/1", "/items/2", "/health", "/ready"):
            await c.get(path, headers={"x-tenant": "acme"})
        held = [asyncio.ensure_future(c.get(f"/stuck/{n}")) for n in range(2)]
        await gate.entered.wait()
        for _ in range(100):
            families = await scrape(app)
            if sample(families, IN_FLIGHT, {"method": "GET", "route": stuck_route}) == 2.0:
                break
            await asyncio.sleep(0.01)
        assert sample(families, IN_FLIGHT, {"method": "GET", "route": stuck_route}) == 2.0
        gate.release.set()
        assert [(await task).status_code for task in held] == [200, 200]
    families = await scrape(app)
    routes = {labels["route"] for labels, _ in samples(families, REQUEST)}
    assert routes <= {item_route, stuck_route, "__unmatched__"}  # /ready: Litestar only
    assert sample(families, REQUEST, {
        "method": "GET", "route": item_route, "status": "200", "tenant": "acme",
    }) == 2.0
    assert samples(families, IN_FLIGHT) == []

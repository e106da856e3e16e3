"""A Starlette app with known routes (a template taking GET and POST, one that fails, the
app's own page at ``/metrics/``) and the known traffic the endpoint tests send to it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support.asgi import client, drive, http_scope


async def hello(request: Request) -> Response:
    return PlainTextResponse("hello")


async def not_metrics(request: Request) -> Response:
    return PlainTextResponse("the app's own page")


def app_with_traffic_routes() -> Starlette:
    async def fail(request: Request) -> Response:
        raise RuntimeError("boom")

    return Starlette(
        routes=[
            Route("/users/{user_id}", hello, methods=["GET", "POST"]),
            Route("/fail", fail),
            Route("/metrics/", not_metrics),
        ]
    )


async def traffic(app: Any) -> None:
    async with client(app) as http:
        for _ in range(3):
            await http.get("/users/1")
        await http.post("/users/2")
        await http.get("/nowhere")
        await http.request("BREW", "/users/3")
    with pytest.raises(RuntimeError):
        await drive(app, http_scope("/fail"))

"""The app the soak test runs under a real uvicorn: a few routes of each kind, one that
fails, one that streams, one that is slow (for clients that hang up)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def item(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"id": request.path_params["item_id"], "size": len(body)})


async def fail(request: Request) -> PlainTextResponse:
    raise RuntimeError("soak: injected application fault")


async def stream(request: Request) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            yield b"x" * 512 + str(index).encode()

    return StreamingResponse(chunks())


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.05)
    return PlainTextResponse("slow")


app = MetricsMiddleware(
    Starlette(routes=[
        Route("/", ok),
        Route("/items/{item_id}", item, methods=["GET", "POST"]),
        Route("/fail", fail),
        Route("/stream", stream),
        Route("/slow", slow),
    ]),
    request_size=True,
    response_size=True,
    time_to_first_byte=True,
)

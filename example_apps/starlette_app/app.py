"""The same kind of service in plain Starlette: nested ``Mount``s and a parameterised mount.

Run with ``uvicorn example_apps.starlette_app.app:app --host 127.0.0.1 --port 8000``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from asgi_metrics import MetricsMiddleware


async def get_user(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["user_id"]})


async def tenant_item(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.path_params))


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def report(request: Request) -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for index in range(5):
            await asyncio.sleep(0.02)
            yield f"row {index}\n".encode()

    return StreamingResponse(rows(), media_type="text/plain")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("this endpoint always fails")


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/report", report),
        Route("/boom", boom),
        Mount("/api/v1", routes=[Mount("/users", routes=[Route("/{user_id:int}", get_user)])]),
        Mount("/tenants/{tenant_id}", routes=[Route("/items/{item_id}", tenant_item)]),
    ],
    middleware=[Middleware(MetricsMiddleware)],
)

"""A small but realistic FastAPI service instrumented with one line.

Routers with prefixes (one nested), a mounted Starlette sub-application whose prefix has a
parameter, path parameters, a streaming endpoint, a background task and an endpoint that
raises.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from fastapi import APIRouter, BackgroundTasks, FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware

users = APIRouter(prefix="/users", tags=["users"])


@users.get("/{user_id}")
async def get_user(user_id: int) -> dict[str, object]:
    await asyncio.sleep(random.uniform(0.001, 0.02))
    if user_id == 0:
        raise HTTPException(status_code=404, detail="no such user")
    return {"id": user_id, "name": f"user-{user_id}"}


@users.post("/")
async def create_user(background: BackgroundTasks) -> dict[str, str]:
    # The audit runs after the response: it is not part of the request's duration.
    background.add_task(asyncio.sleep, 0.05)
    return {"status": "created"}


orders = APIRouter(prefix="/orders", tags=["orders"])


@orders.get("/{order_id}/items/{item_id}")
async def get_order_item(order_id: int, item_id: int) -> dict[str, int]:
    await asyncio.sleep(random.uniform(0.005, 0.05))
    return {"order": order_id, "item": item_id}


api = APIRouter(prefix="/api/v1")
api.include_router(users)
api.include_router(orders)


async def tenant_item(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.path_params))


tenants = Starlette(routes=[Route("/items/{item_id}", tenant_item)])

app = FastAPI(title="asgi_metrics demo")
app.add_middleware(MetricsMiddleware)  # the one line; /metrics is served from here on
app.include_router(api)
app.mount("/tenants/{tenant_id}", tenants)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/report")
async def report() -> StreamingResponse:
    async def rows() -> AsyncIterator[bytes]:
        for index in range(5):
            await asyncio.sleep(0.02)  # streamed over ~0.1 s: timed in full
            yield f"row {index}\n".encode()

    return StreamingResponse(rows(), media_type="text/plain")


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("this endpoint always fails")

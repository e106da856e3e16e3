"""The app the ASGI end-to-end tests serve: ``uvicorn tests.support.apps.fastapi_served:app``
(and the other ASGI servers of ``tests/e2e/test_server_matrix.py``). ``/ws`` is a websocket
that echoes each text message, which the middleware passes through uncounted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry

from asgi_metrics import MetricsMiddleware

items = APIRouter()


@items.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@items.post("/items")
async def create_item(request: Request) -> dict[str, int]:
    # Read to its end, as a real handler would: hypercorn 0.18 over HTTP/2 drops the
    # connection when body data comes in after the response (pgjones/hypercorn#329).
    return {"created": len(await request.body())}


api = FastAPI()
api.include_router(items, prefix="/v1")


@api.get("/stream")
async def stream(chunks: int = 3, delay: float = 0.0) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            await asyncio.sleep(delay)
            yield b"x" * 1024

    return StreamingResponse(body(), media_type="text/plain")


@api.get("/wait-for-disconnect")
async def wait_for_disconnect(request: Request) -> PlainTextResponse:
    for _ in range(1000):
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.01)
    return PlainTextResponse("too late")


@api.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(f"echo {await websocket.receive_text()}")
    except WebSocketDisconnect:
        pass


@api.get("/boom")
async def boom() -> None:
    raise RuntimeError("boom")


app = MetricsMiddleware(api, registry=CollectorRegistry())

"""The ASGI twin of :mod:`tests.support.apps.flask_stuck` (Starlette), for
``uvicorn --workers``: ``/stuck/{n}`` waits for the file named by ``STUCK_RELEASE``."""

from __future__ import annotations

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware

RELEASE = os.environ.get("STUCK_RELEASE", "/nonexistent")


async def item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def stuck(request: Request) -> PlainTextResponse:
    deadline = time.monotonic() + 20
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return PlainTextResponse(str(os.getpid()))


app = Starlette(routes=[Route("/items/{item_id}", item), Route("/stuck/{n}", stuck)])
app.add_middleware(MetricsMiddleware, in_flight_by_route=True)

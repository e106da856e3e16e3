"""A tiny Starlette app for the multiprocess tests.

``/pid`` answers the worker's PID; ``/sleep/{ms}`` sleeps; ``/fail`` answers 500; ``/flaky/{n}``
answers 500 for every fourth ``n``; ``/boom`` raises;
``/hang`` writes the worker's PID to ``$HANG_PID_FILE`` and then sleeps for a minute (to be
killed mid-request).
"""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


async def sleep(request: Request) -> PlainTextResponse:
    await asyncio.sleep(int(request.path_params["ms"]) / 1000)
    return PlainTextResponse("slept")


async def fail(request: Request) -> PlainTextResponse:
    return PlainTextResponse("failed", status_code=500)


async def flaky(request: Request) -> PlainTextResponse:
    """Fails (500) for every fourth ``n``."""
    if int(request.path_params["n"]) % 4 == 0:
        return PlainTextResponse("failed", status_code=500)
    return PlainTextResponse("ok")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("always fails")


async def hang(request: Request) -> PlainTextResponse:
    with open(os.environ["HANG_PID_FILE"], "w") as file:
        file.write(str(os.getpid()))
    await asyncio.sleep(60)
    return PlainTextResponse("woke")


app = MetricsMiddleware(
    Starlette(routes=[
        Route("/pid", pid),
        Route("/sleep/{ms}", sleep),
        Route("/fail", fail),
        Route("/hang", hang),
        Route("/flaky/{n}", flaky),
        Route("/boom", boom),
    ])
)

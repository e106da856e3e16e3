"""The FastAPI twin of :mod:`tests.support.apps.flask_parity`, served by
``uvicorn --workers 2`` with a multiprocess directory: the same routes, labels and
settings; ``set_label`` from a dependency (the ``tenant`` query parameter)."""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from asgi_metrics import MetricsMiddleware, do_not_track, from_header, set_label
from tests.support.apps.parity_common import PLAN_CAP, TENANTS

app = FastAPI()
RELEASE = os.environ.get("STUCK_RELEASE", "/nonexistent")


async def _wait_for_release(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(RELEASE) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def tenant_from_query(request: Request) -> None:
    tenant = request.query_params.get("tenant")
    if tenant is not None:
        set_label("tenant", tenant)


# HEAD and OPTIONS routed too, so that only exclude_methods keeps them out of the counts.
@app.api_route("/items/{item_id}", methods=["GET", "HEAD", "OPTIONS"],
               dependencies=[Depends(tenant_from_query)])
async def item(item_id: int) -> PlainTextResponse:
    return PlainTextResponse(str(item_id), status_code=500 if item_id % 13 == 0 else 200)


@app.get("/stuck/{n}")
async def stuck(n: int) -> PlainTextResponse:
    await _wait_for_release(20)
    return PlainTextResponse(str(os.getpid()))


@do_not_track
@app.get("/untracked/{n}")
async def untracked(n: int) -> PlainTextResponse:
    await _wait_for_release(20)
    return PlainTextResponse(str(os.getpid()))


@app.get("/hang")
async def hang() -> PlainTextResponse:
    with open(os.environ["HANG_PID_FILE"], "w") as file:
        file.write(str(os.getpid()))
    await _wait_for_release(60)
    return PlainTextResponse("woke")


@do_not_track
@app.get("/health")
async def health() -> PlainTextResponse:
    return PlainTextResponse("ok")


@app.get("/pid")
async def pid() -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


app.add_middleware(
    MetricsMiddleware,
    labels={
        "tenant": from_header("X-Tenant", allowed=TENANTS, default="none"),
        "plan": from_header("X-Plan"),
    },
    max_label_values=PLAN_CAP,
    in_flight_by_route=True,
    exclude_methods=["OPTIONS", "HEAD"],
    count_unmatched=False,
    native_histograms=True,
)

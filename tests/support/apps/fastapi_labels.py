"""A FastAPI app with request-derived labels, served by the e2e tests (uvicorn): a header
label with an allow-list, a capped one, a label set by an auth dependency, a response
header label, a stuck route for the in-flight gauge by route, and a do_not_track route."""

from __future__ import annotations

import asyncio

from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse

from asgi_metrics import (
    MetricsMiddleware,
    do_not_track,
    from_header,
    from_response_header,
    set_label,
)

app = FastAPI()
release = asyncio.Event()


def tenant(request: Request) -> None:
    token = request.headers.get("authorization", "")
    if token.startswith("Bearer "):
        set_label("tenant", token.removeprefix("Bearer "))


@app.get("/items/{item_id}", dependencies=[Depends(tenant)])
async def item(item_id: int) -> PlainTextResponse:
    cache = "HIT" if item_id % 2 else "MISS"
    return PlainTextResponse(str(item_id), headers={"X-Cache": cache})


@app.get("/sync/{item_id}", dependencies=[Depends(tenant)])
def sync_item(item_id: int) -> PlainTextResponse:
    return PlainTextResponse(str(item_id))


@app.get("/stuck")
async def stuck() -> PlainTextResponse:
    await asyncio.wait_for(release.wait(), 20)
    return PlainTextResponse("released")


@app.post("/release")
async def release_stuck() -> PlainTextResponse:
    release.set()
    return PlainTextResponse("ok")


@do_not_track
@app.get("/health")
async def health() -> PlainTextResponse:
    return PlainTextResponse("ok")


app.add_middleware(
    MetricsMiddleware,
    labels={
        "tenant": from_header("X-Tenant", default="anonymous"),
        "client": from_header("X-Client"),
        "cache": from_response_header("X-Cache", allowed=["HIT", "MISS"], default="none"),
    },
    max_label_values=5,
    in_flight_by_route=True,
    exclude_methods=["OPTIONS"],
)

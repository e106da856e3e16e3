"""Example Sanic app with HTTP metrics, on Sanic's own server (see the README).

Run from the repository root::

    sanic example_apps.sanic_app.app:app --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import asyncio

from sanic import Blueprint, HTTPResponse, Request, Sanic, json, text
from sanic.exceptions import NotFound

from asgi_metrics.sanic import Metrics

app = Sanic("example_app")
api = Blueprint("api", url_prefix="/api")


@app.get("/")
async def index(request: Request) -> HTTPResponse:
    return text("hello")


@app.get("/healthz")
async def healthz(request: Request) -> HTTPResponse:
    return text("ok")  # excluded from the metrics below


@api.get("/users/<user_id:int>")
async def user(request: Request, user_id: int) -> HTTPResponse:
    if user_id > 100:
        raise NotFound("no such user")
    return json({"id": user_id})


@api.get("/boom")
async def boom(request: Request) -> HTTPResponse:
    raise RuntimeError("example failure")  # Sanic answers its own 500


@api.get("/stream")
async def stream(request: Request) -> None:
    response = await request.respond(content_type="text/plain")
    for index in range(3):
        await asyncio.sleep(0.1)
        await response.send(f"chunk {index}\n")
    await response.eof()


app.blueprint(api)

# The one line: every request counted by its route template, /metrics served.
Metrics(app, exclude_paths=["/healthz"])

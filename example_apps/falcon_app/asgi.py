"""Example Falcon ASGI app with HTTP metrics (see the README for how to run it).

Run from the repository root::

    uvicorn --host 127.0.0.1 --port 8000 example_apps.falcon_app.asgi:app
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import falcon
import falcon.asgi

from asgi_metrics import MetricsMiddleware


class Index:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.text = "hello"


class Health:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.text = "ok"  # excluded from the metrics below


class User:
    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, user_id: int
    ) -> None:
        if user_id > 100:
            raise falcon.HTTPNotFound()
        resp.media = {"id": user_id}


class Boom:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        raise RuntimeError("example failure")  # Falcon answers its own 500


class Stream:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(3):
                await asyncio.sleep(0.1)
                yield b"chunk %d\n" % index

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = chunks()


falcon_app = falcon.asgi.App()
falcon_app.add_route("/", Index())
falcon_app.add_route("/healthz", Health())
falcon_app.add_route("/api/users/{user_id:int}", User())
falcon_app.add_route("/api/boom", Boom())
falcon_app.add_route("/api/stream", Stream())

# The one line: every request counted by its route template, /metrics served.
app = MetricsMiddleware(falcon_app, exclude_paths=["/healthz"])

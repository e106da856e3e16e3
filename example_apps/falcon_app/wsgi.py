"""Example Falcon WSGI app with HTTP metrics (see the README for how to run it).

Run from the repository root::

    gunicorn -w 1 -b 127.0.0.1:8000 example_apps.falcon_app.wsgi:app
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import falcon

from wsgi_metrics import MetricsMiddleware


class Index:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.text = "hello"


class Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.text = "ok"  # excluded from the metrics below


class User:
    def on_get(self, req: falcon.Request, resp: falcon.Response, user_id: int) -> None:
        if user_id > 100:
            raise falcon.HTTPNotFound()
        resp.media = {"id": user_id}


class Boom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("example failure")  # Falcon answers its own 500


class Stream:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        def chunks() -> Iterator[bytes]:
            for index in range(3):
                time.sleep(0.1)
                yield b"chunk %d\n" % index

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = chunks()


falcon_app = falcon.App()
falcon_app.add_route("/", Index())
falcon_app.add_route("/healthz", Health())
falcon_app.add_route("/api/users/{user_id:int}", User())
falcon_app.add_route("/api/boom", Boom())
falcon_app.add_route("/api/stream", Stream())

# The one line: every request counted by its route template, /metrics served.
app = MetricsMiddleware(falcon_app, exclude_paths=["/healthz"])

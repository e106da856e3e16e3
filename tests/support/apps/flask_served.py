"""The Flask app the WSGI end-to-end tests serve (``Metrics(app)``): the same routes as
:mod:`tests.support.apps.fastapi_served`, in Flask's template syntax. Serve it by name, e.g.
``gunicorn tests.support.apps.flask_served:app``."""

from __future__ import annotations

from collections.abc import Iterator

from flask import Flask, Response, request
from prometheus_client import CollectorRegistry

from wsgi_metrics.flask import Metrics

app = Flask(__name__)


@app.get("/v1/items/<int:item_id>")
def get_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


@app.post("/v1/items")
def create_item() -> dict[str, int]:
    return {"created": len(request.get_data())}


@app.get("/stream")
def stream() -> Response:
    chunks = request.args.get("chunks", 3, type=int)

    def body() -> Iterator[bytes]:
        for _ in range(chunks):
            yield b"x" * 1024

    return Response(body(), mimetype="text/plain")


@app.get("/boom")
def boom() -> str:
    raise RuntimeError("boom")


Metrics(app, registry=CollectorRegistry())

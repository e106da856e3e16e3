"""Example Quart app with HTTP metrics, through the extension: a blueprint with a prefix,
a path parameter, a streaming response and an endpoint that raises.

Run from the repository root::

    PYTHONPATH=. hypercorn --bind 127.0.0.1:8000 example_apps.quart_app.app:app
    curl -s 127.0.0.1:8000/api/users/7 >/dev/null; curl -s 127.0.0.1:8000/metrics
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from quart import Blueprint, Quart, abort

from asgi_metrics.quart import Metrics

app = Quart(__name__)
app.config["HTTP_METRICS"] = {"exclude_paths": ["/healthz"]}
api = Blueprint("api", __name__, url_prefix="/api")


@app.get("/")
async def index() -> str:
    return "hello"


@app.get("/healthz")
async def healthz() -> str:
    return "ok"  # excluded from the metrics (app.config above)


@api.get("/users/<int:user_id>")
async def user(user_id: int) -> dict[str, int]:
    if user_id > 100:
        abort(404)
    return {"id": user_id}


@api.get("/boom")
async def boom() -> str:
    raise RuntimeError("example failure")


@api.get("/stream")
async def stream() -> tuple[AsyncIterator[bytes], int, dict[str, str]]:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            yield b"chunk %d\n" % index

    return chunks(), 200, {"Content-Type": "text/plain"}


app.register_blueprint(api)

# The one line: app.asgi_app wrapped, every request counted by its rule, /metrics served.
Metrics(app)

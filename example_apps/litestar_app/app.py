"""Example Litestar app with HTTP metrics: routes under a ``Router`` prefix, a path
parameter, a streaming response and an endpoint that raises.

Run from the repository root::

    PYTHONPATH=. uvicorn --host 127.0.0.1 --port 8000 example_apps.litestar_app.app:app
    curl -s 127.0.0.1:8000/api/users/7 >/dev/null; curl -s 127.0.0.1:8000/metrics
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Router, get
from litestar.exceptions import NotFoundException
from litestar.response import Stream

from asgi_metrics import MetricsMiddleware


@get("/")
async def index() -> str:
    return "hello"


@get("/healthz")
async def healthz() -> str:
    return "ok"  # excluded from the metrics below


@get("/users/{user_id:int}")
async def user(request: Request[Any, Any, Any]) -> dict[str, int]:
    user_id: int = request.path_params["user_id"]
    if user_id > 100:
        raise NotFoundException("no such user")
    return {"id": user_id}


@get("/boom")
async def boom() -> str:
    raise RuntimeError("example failure")


@get("/stream")
async def stream() -> Stream:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            yield b"chunk %d\n" % index

    return Stream(chunks(), media_type="text/plain")


api = Router(path="/api", route_handlers=[user, boom, stream])

# The one line: the whole app wrapped (not in Litestar's middleware=[...], which Litestar
# builds per route): every request counted by its route template, /metrics served.
app = MetricsMiddleware(
    Litestar(route_handlers=[index, healthz, api], openapi_config=None),
    exclude_paths=["/healthz"],
)

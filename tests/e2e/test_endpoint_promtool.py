"""The ASGI endpoint's exposition (default, OpenTelemetry and namespaced naming, with every
optional histogram, escaped label values) passes ``promtool check metrics`` untouched."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.apps.starlette_traffic import app_with_traffic_routes, traffic
from tests.support.asgi import client, scrape_text, wrap
from tests.support.promtool import check_metrics

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"naming": "otel", "request_size": True, "response_size": True,
         "time_to_first_byte": True},
        {"namespace": "shop", "group_status": True, "const_labels": {"service": 'a"b\\c'},
         "request_size": True, "response_size": True, "time_to_first_byte": True},
    ],
    ids=["default", "otel", "namespaced"],
)
async def test_promtool_finds_nothing(options: dict[str, Any]) -> None:
    async def chunks() -> Any:
        yield b"x" * 2000

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks())

    inner = app_with_traffic_routes()
    inner.router.routes.append(Route("/quote/{q}", stream))
    app = wrap(inner, **options)
    await traffic(app)
    async with client(app) as http:
        await http.post("/users/1", content=b"y" * 500)
        await http.get("/quote/with%22quote")
    check_metrics(await scrape_text(app))

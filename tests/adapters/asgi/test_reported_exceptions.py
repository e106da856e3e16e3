"""An ASGI app that turns an exception into its own 500 reports it in
``scope[asgi_metrics.EXCEPTION_KEY]``: counted once, under its route, with its type."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry

from asgi_metrics import EXCEPTION_KEY, MetricsMiddleware
from tests.support.scrape import exceptions_by_labels, parse_samples, requests_by_labels

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Broken(Exception):
    pass


async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    try:
        raise Broken("handled by the app")
    except Broken as exc:
        scope[EXCEPTION_KEY] = exc
    await send({"type": "http.response.start", "status": 500, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"oops"})  # type: ignore[operator]


async def test_reported_exception_is_counted_once_with_its_type() -> None:
    mw = MetricsMiddleware(app, registry=CollectorRegistry(), route_resolver=lambda s: "/x")
    transport = httpx.ASGITransport(app=mw)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/x/1")).status_code == 500
        assert (await client.get("/x/2")).status_code == 500
        samples = parse_samples((await client.get("/metrics")).text)
    assert requests_by_labels(samples) == {("GET", "/x", "500"): 2}
    assert exceptions_by_labels(samples) == {("GET", "/x", "Broken"): 2}

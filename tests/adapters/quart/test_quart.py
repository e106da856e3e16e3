"""Quart through httpx's ASGI transport: ``app.asgi_app = MetricsMiddleware(app.asgi_app)``
and the extension ``asgi_metrics.quart.Metrics`` label every request by the rule Quart
matched, and count the exceptions Quart turns into a 500 once, with type and route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from quart import Blueprint, Quart, abort

from asgi_metrics import UNMATCHED_ROUTE, ConfigurationError, MetricsMiddleware
from asgi_metrics.quart import EXTENSION_KEY, Metrics
from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)

pytestmark = pytest.mark.anyio

STREAM_PAUSE = 0.05  # seconds between the stream's parts


class Handled(Exception):
    """Answered by the app's own error handler: not counted."""


def make_app(**config: Any) -> Quart:
    app = Quart(__name__)
    app.config.update(config)
    api = Blueprint("api", __name__, url_prefix="/api")
    v1 = Blueprint("v1", __name__, url_prefix="/v1")

    @v1.get("/items/<int:item_id>")
    async def item(item_id: int) -> dict[str, int]:
        if item_id > 100:
            abort(404)  # raised by a matched view: keeps its rule
        return {"id": item_id}

    @v1.post("/items")
    async def create() -> tuple[str, int]:
        return "created", 201

    api.register_blueprint(v1)
    app.register_blueprint(api)

    @app.get("/")
    async def index() -> str:
        return "index"

    @app.get("/dir/")
    async def directory() -> str:
        return "dir"

    @app.get("/boom")
    async def boom() -> str:
        raise ValueError("boom")

    @app.get("/handled")
    async def handled() -> str:
        raise Handled

    @app.errorhandler(Handled)
    async def on_handled(exc: Handled) -> tuple[str, int]:
        return "handled", 409

    @app.get("/stream")
    async def stream() -> tuple[AsyncIterator[bytes], int]:
        async def parts() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(STREAM_PAUSE)
                yield b"part"

        return parts(), 200

    return app


def wrapped(**config: Any) -> Quart:
    app = make_app(**config)
    app.asgi_app = MetricsMiddleware(  # type: ignore[method-assign,assignment,arg-type]
        app.asgi_app, registry=CollectorRegistry()
    )
    return app


async def get_all(app: Quart, requests: list[tuple[str, str]]) -> list[int]:
    # raise_app_exceptions=False: a propagated exception becomes the server's 500.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return [(await client.request(method, path)).status_code for method, path in requests]


async def scrape(app: Quart, path: str = "/metrics") -> dict[Any, float]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(path)
    assert response.status_code == 200
    return parse_samples(response.text)


async def test_every_route_by_the_rule_as_written() -> None:
    app = wrapped()
    statuses = await get_all(app, [
        ("GET", "/api/v1/items/1"), ("GET", "/api/v1/items/2"), ("POST", "/api/v1/items"),
        ("GET", "/"), ("GET", "/dir/"), ("GET", "/api/v1/items/500"),
    ])
    assert statuses == [200, 200, 201, 200, 200, 404]
    assert requests_by_labels(await scrape(app)) == {
        ("GET", "/api/v1/items/<int:item_id>", "200"): 2,  # nested blueprint prefixes in
        ("POST", "/api/v1/items", "201"): 1,
        ("GET", "/", "200"): 1,
        ("GET", "/dir/", "200"): 1,
        ("GET", "/api/v1/items/<int:item_id>", "404"): 1,  # abort(404) in a matched view
    }


async def test_no_rule_is_unmatched_404_405_and_slash_redirect() -> None:
    app = wrapped()
    statuses = await get_all(app, [
        ("GET", "/nowhere"), ("GET", "/api/v1/items/x"), ("DELETE", "/api/v1/items/1"),
        ("GET", "/dir"), ("GET", "/dir/"),
    ])
    assert statuses == [404, 404, 405, 308, 200]
    # As with Flask: Werkzeug's router names no rule for a 405 or a strict-slash redirect.
    assert requests_by_labels(await scrape(app)) == {
        ("GET", UNMATCHED_ROUTE, "404"): 2,
        ("DELETE", UNMATCHED_ROUTE, "405"): 1,
        ("GET", UNMATCHED_ROUTE, "308"): 1,
        ("GET", "/dir/", "200"): 1,
    }


@pytest.mark.parametrize(
    "config",
    [{}, {"TESTING": True}, {"PROPAGATE_EXCEPTIONS": True}],
    ids=["quarts-500", "testing-traceback-500", "propagated"],
)
async def test_exceptions_quart_turns_into_500s_counted_once_with_type_and_route(
    config: dict[str, Any],
) -> None:
    app = wrapped(**config)
    statuses = await get_all(app, [("GET", "/boom"), ("GET", "/boom"), ("GET", "/handled")])
    assert statuses == [500, 500, 409]
    samples = await scrape(app)
    assert exceptions_by_labels(samples) == {("GET", "/boom", "ValueError"): 2}
    assert requests_by_labels(samples) == {
        ("GET", "/boom", "500"): 2, ("GET", "/handled", "409"): 1,
    }


async def test_streaming_response_timed_to_its_last_byte_and_in_flight_back_to_zero() -> None:
    app = wrapped()
    assert await get_all(app, [("GET", "/stream")]) == [200]
    samples = await scrape(app)
    assert requests_by_labels(samples) == {("GET", "/stream", "200"): 1}
    assert duration_sum(samples, "GET", "/stream", "200") >= 3 * STREAM_PAUSE
    assert in_flight(samples) == 0


async def test_the_quart_app_itself_can_be_wrapped() -> None:
    app = make_app()
    outer = MetricsMiddleware(app, registry=CollectorRegistry())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/api/v1/items/3")).status_code == 200
        samples = parse_samples((await client.get("/metrics")).text)
    assert requests_by_labels(samples) == {("GET", "/api/v1/items/<int:item_id>", "200"): 1}


async def test_extension_reads_app_config_and_keywords_win() -> None:
    app = make_app()
    app.config["HTTP_METRICS"] = {"metrics_path": "/internal/metrics", "namespace": "cfg"}
    metrics = Metrics(app, namespace="kw", registry=CollectorRegistry())
    middleware = app.extensions[EXTENSION_KEY]
    assert isinstance(middleware, MetricsMiddleware)
    assert app.asgi_app is middleware
    assert middleware.settings.metrics_path == "/internal/metrics"
    assert metrics.options["namespace"] == "kw"
    assert await get_all(app, [("GET", "/api/v1/items/1"), ("GET", "/boom")]) == [200, 500]
    samples = await scrape(app, "/internal/metrics")
    assert requests_by_labels(samples, prefix="kw_") == {
        ("GET", "/api/v1/items/<int:item_id>", "200"): 1, ("GET", "/boom", "500"): 1,
    }
    exceptions = {
        dict(labels)["exception_type"]: value
        for (name, labels), value in samples.items() if name == "kw_http_request_exceptions_total"
    }
    assert exceptions == {"ValueError": 1}


async def test_extension_init_app_and_route_resolver_keeps_counting_exceptions() -> None:
    app = make_app()
    metrics = Metrics(route_resolver=lambda scope: "/mine", registry=CollectorRegistry())
    metrics.init_app(app)
    assert await get_all(app, [("GET", "/boom")]) == [500]
    samples = await scrape(app)
    assert requests_by_labels(samples) == {("GET", "/mine", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/mine", "ValueError"): 1}


def test_extension_rejects_a_config_that_is_not_a_dict() -> None:
    app = make_app()
    app.config["HTTP_METRICS"] = ["namespace", "x"]
    with pytest.raises(ConfigurationError, match="HTTP_METRICS"):
        Metrics(app)

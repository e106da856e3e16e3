"""Sanic on its own server, in process (sanic-testing's ``ReusableClient`` runs Sanic's real
server on 127.0.0.1): templates as Sanic's router wrote them, exceptions Sanic renders
counted once, 404 and 405 unmatched, a streamed body timed to its last chunk, in-flight
back to 0, the options. A client leaving mid-stream: tests/e2e/test_sanic_server.py (this
client runs the server's loop only during its own requests)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sanic import Blueprint, HTTPResponse, Request, Sanic, json, text
from sanic.exceptions import NotFound
from sanic_testing.reusable import ReusableClient

from asgi_metrics import ConfigurationError
from asgi_metrics.sanic import Metrics
from tests.support.prometheus_server import free_port
from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)

STREAM_PAUSE = 0.05
_names = itertools.count()


def make_app() -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic(f"metrics_test_{next(_names)}")
    api = Blueprint("api", url_prefix="/api")
    v2 = Blueprint("v2", url_prefix="/v2")

    @app.get("/items/<item_id:int>")
    async def item(request: Request, item_id: int) -> HTTPResponse:
        if item_id > 100:
            raise NotFound("no such item")  # a 404 of a matched route keeps its route
        return json({"id": item_id})

    @app.get("/loose", strict_slashes=False)
    async def loose(request: Request) -> HTTPResponse:
        return text("loose")

    @api.get("/users/<name>")
    async def user(request: Request, name: str) -> HTTPResponse:
        return text(name)

    @v2.get("/things/<thing_id:int>")
    async def thing(request: Request, thing_id: int) -> HTTPResponse:
        return text(str(thing_id))

    @app.get("/boom")
    async def boom(request: Request) -> HTTPResponse:
        raise ValueError("boom")

    @app.get("/stream")
    async def stream(request: Request) -> None:
        response = await request.respond(content_type="text/plain")
        for index in range(3):
            await asyncio.sleep(STREAM_PAUSE)
            await response.send(f"chunk {index}\n")
        await response.eof()

    @app.get("/stream-fails")
    async def stream_fails(request: Request) -> None:
        response = await request.respond(content_type="text/plain")
        await response.send("first part\n")
        raise KeyError("mid-stream")

    app.blueprint(api)
    app.blueprint(Blueprint.group(v2, url_prefix="/group"))
    return app


@pytest.fixture
def client() -> Iterator[ReusableClient]:
    app = make_app()
    Metrics(app, registry=CollectorRegistry())
    with ReusableClient(app, host="127.0.0.1", port=free_port()) as client:
        yield client


def get(client: ReusableClient, path: str, method: str = "GET") -> Any:
    _, response = getattr(client, method.lower())(path)
    return response


def scrape(client: ReusableClient) -> Any:
    response = get(client, "/metrics")
    assert response.status == 200
    return parse_samples(response.text)


def test_templates_as_sanic_writes_them(client: ReusableClient) -> None:
    paths = ["/items/1", "/items/2", "/items/500", "/api/users/ann", "/group/v2/things/7",
             "/loose", "/loose/"]
    assert [get(client, path).status for path in paths] == [200, 200, 404, 200, 200, 200, 200]
    samples = scrape(client)
    assert requests_by_labels(samples) == {
        ("GET", "/items/<item_id:int>", "200"): 2,
        ("GET", "/items/<item_id:int>", "404"): 1,
        ("GET", "/api/users/<name:str>", "200"): 1,  # Sanic's router adds the type
        ("GET", "/group/v2/things/<thing_id:int>", "200"): 1,
        ("GET", "/loose", "200"): 2,
    }
    assert exceptions_by_labels(samples) == {}  # NotFound is a response
    assert in_flight(samples) == 0


def test_404_and_405_are_unmatched(client: ReusableClient) -> None:
    statuses = [get(client, "/nope").status, get(client, "/items/abc").status,
                get(client, "/items/1", "DELETE").status]
    assert statuses == [404, 404, 405]
    assert requests_by_labels(scrape(client)) == {
        ("GET", "__unmatched__", "404"): 2,
        # Sanic's router raises MethodNotAllowed without saying which route matched.
        ("DELETE", "__unmatched__", "405"): 1,
    }


def test_exception_sanic_renders_is_counted_once_and_response_unchanged() -> None:
    bare_app = make_app()
    with ReusableClient(bare_app, host="127.0.0.1", port=free_port()) as bare:
        expected = get(bare, "/boom")
    app = make_app()
    Metrics(app, registry=CollectorRegistry())
    with ReusableClient(app, host="127.0.0.1", port=free_port()) as client:
        response = get(client, "/boom")
        assert (response.status, response.content) == (expected.status, expected.content)
        assert response.headers.get("content-type") == expected.headers.get("content-type")
        samples = scrape(client)
    assert requests_by_labels(samples) == {("GET", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/boom", "ValueError"): 1}
    assert in_flight(samples) == 0


def test_stream_timed_to_its_last_chunk(client: ReusableClient) -> None:
    assert get(client, "/stream").text == "chunk 0\nchunk 1\nchunk 2\n"
    samples = scrape(client)
    assert requests_by_labels(samples) == {("GET", "/stream", "200"): 1}
    assert duration_sum(samples, "GET", "/stream", "200") >= 3 * STREAM_PAUSE * 0.9
    assert in_flight(samples) == 0


def test_stream_failing_after_its_headers_keeps_its_status_and_counts_once(
    client: ReusableClient,
) -> None:
    get(client, "/stream-fails")
    samples = scrape(client)
    assert requests_by_labels(samples) == {("GET", "/stream-fails", "200"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/stream-fails", "KeyError"): 1}
    assert in_flight(samples) == 0


def test_metrics_endpoint_head_and_405(client: ReusableClient) -> None:
    head = get(client, "/metrics", "HEAD")
    assert head.status == 200 and head.content == b""
    post = get(client, "/metrics", "POST")
    assert post.status == 405 and post.headers["allow"] == "GET, HEAD"
    assert requests_by_labels(scrape(client)) == {}  # the endpoint is not counted


def test_options_from_config_and_keywords() -> None:
    app = make_app()
    app.config["HTTP_METRICS"] = {"exclude_paths": ["/loose"], "namespace": "shop"}
    Metrics(app, registry=CollectorRegistry(), metrics_path="/internal/metrics")
    with ReusableClient(app, host="127.0.0.1", port=free_port()) as client:
        get(client, "/loose")
        get(client, "/items/1")
        response = get(client, "/internal/metrics")
    assert response.status == 200
    assert requests_by_labels(parse_samples(response.text), prefix="shop_") == {
        ("GET", "/items/<item_id:int>", "200"): 1,
    }


@pytest.mark.parametrize("name", ["correlation_id", "time_to_first_byte", "request_size"])
def test_unsupported_options_are_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Metrics(make_app(), registry=CollectorRegistry(), **{name: True})

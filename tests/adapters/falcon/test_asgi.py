"""Falcon ASGI (``falcon.asgi.App``) wrapped in the ASGI middleware, through httpx's ASGI
transport: templates as Falcon's router wrote them, exceptions Falcon renders counted
once, 404 unmatched, 405 under its template, a streamed body timed to its last chunk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import falcon
import falcon.asgi
import httpx
import pytest

from tests.support.asgi import wrap
from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)

STREAM_PAUSE = 0.05


class Item:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     item_id: int) -> None:
        if item_id > 100:
            raise falcon.HTTPNotFound()  # a 404 of a matched route keeps its route
        resp.media = {"id": item_id}

    async def on_get_detail(self, req: Any, resp: Any, item_id: int) -> None:
        resp.media = {"id": item_id, "detail": True}


class File:
    async def on_get(self, req: Any, resp: Any, name: str, ext: str) -> None:
        resp.text = f"{name}.{ext}"


class Boom:
    async def on_get(self, req: Any, resp: Any) -> None:
        raise ValueError("boom")

    async def on_post(self, req: Any, resp: Any) -> None:
        raise KeyError("propagated")


class Moved:
    async def on_get(self, req: Any, resp: Any) -> None:
        raise falcon.HTTPMovedPermanently("/items/1")


class Stream:
    async def on_get(self, req: Any, resp: Any) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(3):
                await asyncio.sleep(STREAM_PAUSE)
                yield b"chunk %d\n" % index

        resp.stream = chunks()


async def reraise(req: Any, resp: Any, ex: Exception, params: Any) -> None:
    raise ex  # handled outside Falcon: it propagates to the server


def make_app(**options: Any) -> falcon.asgi.App:
    app = falcon.asgi.App(**options)
    app.add_route("/items/{item_id:int}", Item())
    app.add_route("/items/{item_id:int}/detail", Item(), suffix="detail")
    app.add_route("/files/{name}.{ext}", File())
    app.add_route("/boom", Boom())
    app.add_route("/moved", Moved())
    app.add_route("/stream", Stream())
    app.add_error_handler(KeyError, reraise)

    async def sink(req: Any, resp: Any) -> None:
        resp.text = "sunk"

    app.add_sink(sink, "/sink")
    return app


async def call(app: Any, *requests: tuple[str, str]) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [await client.request(method, path) for method, path in requests]


async def scrape(app: Any) -> Any:
    (response,) = await call(app, ("GET", "/metrics"))
    assert response.status_code == 200
    return parse_samples(response.text)


@pytest.mark.anyio
async def test_templates_as_falcon_writes_them() -> None:
    app = wrap(make_app())
    responses = await call(
        app, ("GET", "/items/1"), ("GET", "/items/2"), ("GET", "/items/3/detail"),
        ("GET", "/files/report.pdf"), ("GET", "/items/500"), ("GET", "/moved"),
    )
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 404, 301]
    samples = await scrape(app)
    assert requests_by_labels(samples) == {
        ("GET", "/items/{item_id:int}", "200"): 2,
        ("GET", "/items/{item_id:int}/detail", "200"): 1,
        ("GET", "/files/{name}.{ext}", "200"): 1,
        ("GET", "/items/{item_id:int}", "404"): 1,
        ("GET", "/moved", "301"): 1,
    }
    assert exceptions_by_labels(samples) == {}  # HTTPError/HTTPStatus are responses
    assert in_flight(samples) == 0


@pytest.mark.anyio
async def test_unmatched_404_405_and_slashes() -> None:
    app = wrap(make_app())
    responses = await call(
        app, ("GET", "/nope"), ("GET", "/items/abc"), ("GET", "/items/1/"),
        ("DELETE", "/items/1"), ("GET", "/sink/anything"),
    )
    assert [r.status_code for r in responses] == [404, 404, 404, 405, 200]
    assert requests_by_labels(await scrape(app)) == {
        ("GET", "__unmatched__", "404"): 3,
        # Falcon's router matched the path, then found no responder: its template.
        ("DELETE", "/items/{item_id:int}", "405"): 1,
        # A sink has no uri_template: Falcon's router did not match it.
        ("GET", "__unmatched__", "200"): 1,
    }


@pytest.mark.anyio
async def test_stripped_trailing_slash_keeps_the_template() -> None:
    bare = make_app()
    bare.req_options.strip_url_path_trailing_slash = True
    app = wrap(bare)
    (response,) = await call(app, ("GET", "/items/1/"))
    assert response.status_code == 200
    assert requests_by_labels(await scrape(app)) == {("GET", "/items/{item_id:int}", "200"): 1}


@pytest.mark.anyio
async def test_exception_falcon_renders_is_counted_once_and_response_unchanged() -> None:
    (bare,) = await call(make_app(), ("GET", "/boom"))
    app = wrap(make_app())
    (wrapped,) = await call(app, ("GET", "/boom"))
    assert (wrapped.status_code, wrapped.content) == (bare.status_code, bare.content)
    assert wrapped.headers == bare.headers
    samples = await scrape(app)
    assert requests_by_labels(samples) == {("GET", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/boom", "ValueError"): 1}
    assert in_flight(samples) == 0


@pytest.mark.anyio
async def test_exception_propagated_past_falcon_is_counted_once_under_its_route() -> None:
    app = wrap(make_app())
    (response,) = await call(app, ("POST", "/boom"))
    assert response.status_code == 500
    samples = await scrape(app)
    assert requests_by_labels(samples) == {("POST", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("POST", "/boom", "KeyError"): 1}


@pytest.mark.anyio
async def test_an_existing_error_reporter_is_still_called() -> None:
    reported: list[tuple[str, bool]] = []
    bare = make_app()
    bare.set_error_reporter(
        lambda req, error, params, handled: reported.append((type(error).__name__, handled))
    )
    app = wrap(bare)
    await call(app, ("GET", "/boom"))
    assert reported == [("ValueError", True)]
    assert exceptions_by_labels(await scrape(app)) == {("GET", "/boom", "ValueError"): 1}


@pytest.mark.anyio
async def test_stream_timed_to_its_last_chunk() -> None:
    app = wrap(make_app())
    (response,) = await call(app, ("GET", "/stream"))
    assert response.content == b"chunk 0\nchunk 1\nchunk 2\n"
    samples = await scrape(app)
    assert requests_by_labels(samples) == {("GET", "/stream", "200"): 1}
    assert duration_sum(samples, "GET", "/stream", "200") >= 3 * STREAM_PAUSE * 0.9
    assert in_flight(samples) == 0


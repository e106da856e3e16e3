"""``request_size`` is what the client sent: the declared ``Content-Length`` whether the app
reads the body or not, and, only without one (a chunked body), the bytes the app received.

Through Starlette and FastAPI (httpx's ASGITransport). Flask, plain WSGI and Django:
``tests/adapters/*/``; under real servers: ``tests/e2e/test_request_size_servers.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tests.support.asgi import client, scrape, wrap
from tests.support.bodies import BODY, CHUNKS, SIZE_COUNT, SIZE_SUM, post_labels
from tests.support.scrape import sample

# ASGI: Starlette and FastAPI -------------------------------------------------------------


async def ignore(request: Request) -> Response:
    return PlainTextResponse("never read the body")


async def read(request: Request) -> Response:
    return PlainTextResponse(await request.body())


def starlette(**options: Any) -> Any:
    app = Starlette(routes=[Route("/ignore", ignore, methods=["POST"]),
                            Route("/read", read, methods=["POST"])])
    return wrap(app, request_size=True, **options)


async def chunked() -> AsyncIterator[bytes]:
    for chunk in CHUNKS:
        yield chunk


@pytest.mark.anyio
@pytest.mark.parametrize("options", [{}, {"response_size": True, "time_to_first_byte": True}])
async def test_asgi_declared_size_counts_even_when_the_app_never_reads(
    options: dict[str, Any],
) -> None:
    app = starlette(**options)
    async with client(app) as http:
        for path in ("/ignore", "/read"):
            response = await http.post(path, content=BODY)
            assert response.status_code == 200
            assert response.request.headers["content-length"] == "9"
    families = await scrape(app)
    for route in ("/ignore", "/read"):
        assert sample(families, SIZE_SUM, post_labels(route)) == 9
        assert sample(families, SIZE_COUNT, post_labels(route)) == 1


@pytest.mark.anyio
async def test_asgi_chunked_body_counts_what_the_app_received() -> None:
    app = starlette()
    async with client(app) as http:
        response = await http.post("/read", content=chunked())
        assert "content-length" not in response.request.headers
        assert response.content == BODY
        # Nothing declared and nothing read: nothing is known to have arrived.
        assert (await http.post("/ignore", content=chunked())).status_code == 200
    families = await scrape(app)
    assert sample(families, SIZE_SUM, post_labels("/read")) == 9
    assert sample(families, SIZE_SUM, post_labels("/ignore")) == 0
    assert sample(families, SIZE_COUNT, post_labels("/ignore")) == 1


@pytest.mark.anyio
async def test_fastapi_endpoint_without_a_body_parameter() -> None:
    api = FastAPI()

    @api.post("/hooks/{name}")
    def hook(name: str) -> dict[str, str]:
        return {"hook": name}  # the body is never read

    app = wrap(api, request_size=True)
    async with client(app) as http:
        assert (await http.post("/hooks/deploy", content=BODY)).status_code == 200
        assert (await http.post("/hooks/deploy", content=b"x" * 1000)).status_code == 200
    families = await scrape(app)
    assert sample(families, SIZE_SUM, post_labels("/hooks/{name}")) == 1009
    assert sample(families, SIZE_COUNT, post_labels("/hooks/{name}")) == 2

"""Falcon WSGI (``falcon.App``) wrapped in the WSGI middleware, through Falcon's own test
client (which iterates and closes the body as a server does): templates as Falcon's router
wrote them, exceptions Falcon renders counted once, 404 unmatched, 405 under its template,
a streamed body timed to its last chunk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import falcon
import falcon.testing
import pytest
from prometheus_client import CollectorRegistry

from tests.support.scrape import (
    duration_sum,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from wsgi_metrics import MetricsMiddleware

STREAM_PAUSE = 0.05


class Item:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        if item_id > 100:
            raise falcon.HTTPNotFound()  # a 404 of a matched route keeps its route
        resp.media = {"id": item_id}

    def on_get_detail(self, req: Any, resp: Any, item_id: int) -> None:
        resp.media = {"id": item_id, "detail": True}


class Boom:
    def on_get(self, req: Any, resp: Any) -> None:
        raise ValueError("boom")

    def on_post(self, req: Any, resp: Any) -> None:
        raise KeyError("propagated")


class Stream:
    def on_get(self, req: Any, resp: Any) -> None:
        def chunks() -> Iterator[bytes]:
            for index in range(3):
                time.sleep(STREAM_PAUSE)
                yield b"chunk %d\n" % index

        resp.stream = chunks()


def reraise(req: Any, resp: Any, ex: Exception, params: Any) -> None:
    raise ex  # handled outside Falcon: it propagates to the server


def make_app() -> falcon.App[Any, Any]:
    app = falcon.App()
    app.add_route("/items/{item_id:int}", Item())
    app.add_route("/items/{item_id:int}/detail", Item(), suffix="detail")
    app.add_route("/boom", Boom())
    app.add_route("/stream", Stream())
    app.add_error_handler(KeyError, reraise)
    return app


def wrap(app: Any) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(MetricsMiddleware(app, registry=CollectorRegistry()))


def scrape(client: falcon.testing.TestClient) -> Any:
    response = client.simulate_get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.text)


def test_templates_unmatched_and_405() -> None:
    client = wrap(make_app())
    statuses = [
        client.simulate_get("/items/1").status_code,
        client.simulate_get("/items/2/detail").status_code,
        client.simulate_get("/items/500").status_code,
        client.simulate_get("/nope").status_code,
        client.simulate_get("/items/abc").status_code,
        client.simulate_delete("/items/1").status_code,
    ]
    assert statuses == [200, 200, 404, 404, 404, 405]
    samples = scrape(client)
    assert requests_by_labels(samples) == {
        ("GET", "/items/{item_id:int}", "200"): 1,
        ("GET", "/items/{item_id:int}/detail", "200"): 1,
        ("GET", "/items/{item_id:int}", "404"): 1,
        ("GET", "__unmatched__", "404"): 2,
        ("DELETE", "/items/{item_id:int}", "405"): 1,
    }
    assert exceptions_by_labels(samples) == {}
    assert in_flight(samples) == 0


def test_exception_falcon_renders_is_counted_once_and_response_unchanged() -> None:
    bare = falcon.testing.TestClient(make_app()).simulate_get("/boom")
    client = wrap(make_app())
    wrapped = client.simulate_get("/boom")
    assert (wrapped.status, wrapped.content) == (bare.status, bare.content)
    assert wrapped.headers == bare.headers
    samples = scrape(client)
    assert requests_by_labels(samples) == {("GET", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("GET", "/boom", "ValueError"): 1}
    assert in_flight(samples) == 0


def test_exception_propagated_past_falcon_is_counted_once_under_its_route() -> None:
    app = MetricsMiddleware(make_app(), registry=CollectorRegistry())
    client = falcon.testing.TestClient(app)
    with pytest.raises(KeyError):  # Falcon's test client re-raises what the app raised
        client.simulate_post("/boom")
    samples = scrape(client)
    assert requests_by_labels(samples) == {("POST", "/boom", "500"): 1}
    assert exceptions_by_labels(samples) == {("POST", "/boom", "KeyError"): 1}
    assert in_flight(samples) == 0


def test_an_existing_error_reporter_is_still_called() -> None:
    reported: list[tuple[str, bool]] = []
    app = make_app()
    app.set_error_reporter(
        lambda req, error, params, handled: reported.append((type(error).__name__, handled))
    )
    client = wrap(app)
    client.simulate_get("/boom")
    assert reported == [("ValueError", True)]
    assert exceptions_by_labels(scrape(client)) == {("GET", "/boom", "ValueError"): 1}


def test_stream_timed_to_its_last_chunk() -> None:
    client = wrap(make_app())
    assert client.simulate_get("/stream").content == b"chunk 0\nchunk 1\nchunk 2\n"
    samples = scrape(client)
    assert requests_by_labels(samples) == {("GET", "/stream", "200"): 1}
    assert duration_sum(samples, "GET", "/stream", "200") >= 3 * STREAM_PAUSE * 0.9
    assert in_flight(samples) == 0

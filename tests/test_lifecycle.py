"""What a request's duration covers, exceptions, disconnects, cancellation, in-flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from asgi_metrics import MetricsMiddleware
from tests.helpers import (
    DURATION,
    EXCEPTIONS,
    IN_FLIGHT,
    client,
    drive,
    http_scope,
    in_flight,
    requests,
    sample,
    samples,
    scrape,
    wrap,
)

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def duration_sum(families: Any, route: str, status: str = "200") -> float:
    return sample(
        families, f"{DURATION}_sum", {"method": "GET", "route": route, "status": status}
    )


async def test_streaming_response_is_timed_in_full() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            await asyncio.sleep(0.05)
            yield b"chunk"

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks())

    app = wrap(Starlette(routes=[Route("/stream", stream)]))
    messages = await drive(app, http_scope("/stream"))
    assert b"".join(m.get("body", b"") for m in messages) == b"chunk" * 4
    families = await scrape(app)
    assert requests(families, "/stream") == 1
    assert duration_sum(families, "/stream") >= 0.2


async def test_background_tasks_are_not_timed() -> None:
    async def slow_task() -> None:
        await asyncio.sleep(0.3)

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("done", background=BackgroundTask(slow_task))

    app = wrap(Starlette(routes=[Route("/bg", endpoint)]))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await drive(app, http_scope("/bg"))
    assert loop.time() - started >= 0.3  # the task did run inside the app call
    families = await scrape(app)
    assert requests(families, "/bg") == 1
    assert duration_sum(families, "/bg") < 0.15


async def test_recorded_once_the_server_has_taken_the_last_message() -> None:
    """Recorded after the server's ``send`` of the last body message returns, not before:
    servers write the response head and the body as each arrives, so recording in between
    would hold back the rest of a response the client has begun to read. The duration still
    ends when the app hands that message over, not when the server is done with it."""

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("done")

    app = wrap(Starlette(routes=[Route("/done", endpoint)]))
    at_last_body: list[tuple[float, float]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            families = await scrape(app)
            at_last_body.append((requests(families, "/done"), in_flight(families)))
            await asyncio.sleep(0.2)  # a slow write: the server's time, not the request's

    await app(http_scope("/done"), receive, send)
    assert at_last_body == [(0, 1)]  # not yet recorded, still in flight
    families = await scrape(app)
    assert requests(families, "/done") == 1
    assert in_flight(families) == 0
    assert duration_sum(families, "/done") < 0.15


async def test_exception_before_the_response_is_500_and_reraised_unchanged() -> None:
    error = Boom("failed")

    async def fail(request: Request) -> Response:
        raise error

    inner = Starlette(routes=[Route("/fail", fail)])
    inner.add_middleware(MetricsMiddleware, registry=CollectorRegistry())
    # The middleware sits inside Starlette's ServerErrorMiddleware, which answers 500.
    with pytest.raises(Boom) as raised:
        await drive(inner, http_scope("/fail"))
    assert raised.value is error
    families = await scrape(inner)
    assert requests(families, "/fail", status="500") == 1
    assert sample(
        families, EXCEPTIONS, {"method": "GET", "route": "/fail", "exception_type": "Boom"}
    ) == 1
    assert in_flight(families) == 0


async def test_exception_from_a_plain_asgi_app_is_reraised_unchanged() -> None:
    error = Boom("raw")

    async def raw(scope: Any, receive: Any, send: Any) -> None:
        raise error

    app = wrap(raw)
    with pytest.raises(Boom) as raised:
        await drive(app, http_scope("/x"))
    assert raised.value is error
    families = await scrape(app)
    assert requests(families, "__unmatched__", status="500") == 1
    assert sample(
        families,
        EXCEPTIONS,
        {"method": "GET", "route": "__unmatched__", "exception_type": "Boom"},
    ) == 1
    assert in_flight(families) == 0


async def test_exception_when_wrapping_the_whole_starlette_app() -> None:
    async def fail(request: Request) -> Response:
        raise Boom

    app = wrap(Starlette(routes=[Route("/fail", fail)]))
    with pytest.raises(Boom):
        await drive(app, http_scope("/fail"))
    families = await scrape(app)
    assert requests(families, "/fail", status="500") == 1
    assert sample(
        families, EXCEPTIONS, {"method": "GET", "route": "/fail", "exception_type": "Boom"}
    ) == 1


async def test_exception_after_the_response_started_keeps_the_sent_status() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        raise Boom("mid-stream")

    async def stream(request: Request) -> Response:
        return StreamingResponse(chunks(), status_code=206)

    app = wrap(Starlette(routes=[Route("/stream", stream)]))
    sent: list[dict[str, Any]] = []
    with pytest.raises(Boom):
        await drive(app, http_scope("/stream"), sent=sent)
    assert sent[0]["status"] == 206
    families = await scrape(app)
    assert requests(families, "/stream", status="206") == 1
    assert samples(families, "http_requests_total") == [
        ({"method": "GET", "route": "/stream", "status": "206"}, 1.0)
    ]
    assert sample(
        families, EXCEPTIONS, {"method": "GET", "route": "/stream", "exception_type": "Boom"}
    ) == 1
    assert in_flight(families) == 0


async def test_client_disconnect_before_the_response_is_499() -> None:
    async def read_body(request: Request) -> Response:
        body = await request.body()
        return PlainTextResponse(body)

    async def wait_for_disconnect(request: Request) -> Response:
        while not await request.is_disconnected():
            await asyncio.sleep(0.01)
        return PlainTextResponse("nobody is listening")

    async def raw_gives_up(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.disconnect"

    app = wrap(
        Starlette(routes=[Route("/read", read_body, methods=["POST"]),
                          Route("/wait", wait_for_disconnect)])
    )
    disconnect = [{"type": "http.disconnect"}]
    for path, method in (("/read", "POST"), ("/wait", "GET")):
        try:
            await drive(app, http_scope(path, method=method), incoming=disconnect)
        except Exception as exc:  # Starlette raises ClientDisconnect: not ours to hide
            assert type(exc).__name__ == "ClientDisconnect"
    raw = wrap(raw_gives_up)
    assert await drive(raw, http_scope("/raw"), incoming=disconnect) == []

    families = await scrape(app)
    statuses = {labels["status"] for labels, _ in samples(families, "http_requests_total")}
    assert statuses == {"499"}, samples(families, "http_requests_total")
    assert requests(families, "/read", "POST", "499") == 1
    assert requests(families, "/wait", "GET", "499") == 1
    assert in_flight(families) == 0
    raw_families = await scrape(raw)
    assert requests(raw_families, "__unmatched__", status="499") == 1
    assert in_flight(raw_families) == 0


async def test_cancellation_before_the_response_is_499_and_propagates() -> None:
    entered = asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await asyncio.sleep(10)
        return PlainTextResponse("late")

    app = wrap(Starlette(routes=[Route("/slow", slow)]))
    task = asyncio.ensure_future(drive(app, http_scope("/slow")))
    await entered.wait()
    families = await scrape(app)
    assert sample(families, IN_FLIGHT, {"method": "GET"}) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    families = await scrape(app)
    assert requests(families, "/slow", status="499") == 1
    assert sample(families, IN_FLIGHT, {"method": "GET"}) == 0
    assert samples(families, EXCEPTIONS) == []


async def test_in_flight_is_one_during_a_slow_request_and_zero_after() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: Request) -> Response:
        entered.set()
        await release.wait()
        return PlainTextResponse("ok")

    app = wrap(Starlette(routes=[Route("/slow", slow, methods=["GET", "POST"])]))
    async with client(app) as http:
        pending = asyncio.ensure_future(http.post("/slow"))
        await entered.wait()
        during = await scrape(app)
        release.set()
        assert (await pending).status_code == 200
    after = await scrape(app)
    assert sample(during, IN_FLIGHT, {"method": "POST"}) == 1
    assert in_flight(during) == 1
    assert sample(after, IN_FLIGHT, {"method": "POST"}) == 0
    assert requests(after, "/slow", "POST") == 1


async def test_app_returning_without_a_response() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    app = wrap(silent)
    assert await drive(app, http_scope("/")) == []
    families = await scrape(app)
    # The server answers 500 for an app that sent nothing.
    assert requests(families, "__unmatched__", status="500") == 1
    assert in_flight(families) == 0


async def test_recording_failure_leaves_the_request_alone_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def broken_resolver(scope: Any) -> str:
        calls.append(scope["path"])
        raise KeyError("resolver bug")

    inner = Starlette(routes=[Route("/ok/{n}", lambda request: PlainTextResponse("fine"))])
    app = wrap(inner, route_resolver=broken_resolver)
    with caplog.at_level("DEBUG"):
        for n in range(3):
            bare = await drive(inner, http_scope(f"/ok/{n}"))
            assert await drive(app, http_scope(f"/ok/{n}")) == bare
            assert bare[0]["status"] == 200
    assert len(calls) == 3
    records = [r for r in caplog.records if r.name.startswith("asgi_metrics")]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelname == "ERROR"
    assert "resolver bug" in caplog.text
    families = await scrape(app)
    assert requests(families, "__unmatched__") == 3
    assert in_flight(families) == 0

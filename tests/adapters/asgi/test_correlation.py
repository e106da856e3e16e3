"""Correlation IDs in the ASGI middleware: taken, replaced, echoed, seen by app and logs."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from asgi_metrics import CorrelationIdFilter, MetricsMiddleware, get_correlation_id
from asgi_metrics.correlation.ids import VALID_ID

HEX32 = re.compile(r"[0-9a-f]{32}")
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

app_log = logging.getLogger("tests.app")


class Records(logging.Handler):
    """Collects records after the filter ran, as a real handler would format them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(CorrelationIdFilter())
        self.setFormatter(logging.Formatter("%(correlation_id)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Any:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


background_seen: list[str | None] = []


async def echo(request: Request) -> Response:
    app_log.info("handling")
    cid = get_correlation_id()

    async def later() -> None:
        await asyncio.sleep(0)
        background_seen.append(get_correlation_id())

    return JSONResponse({"id": cid}, background=BackgroundTask(later))


async def boom(request: Request) -> Response:
    app_log.info("about to fail")
    raise RuntimeError("unhandled")


async def health(request: Request) -> Response:
    return PlainTextResponse(get_correlation_id() or "")


def starlette_app(**options: Any) -> Starlette:
    app = Starlette(routes=[Route("/echo", echo), Route("/boom", boom), Route("/health", health)])
    app.add_middleware(
        MetricsMiddleware, registry=CollectorRegistry(), correlation_id=True, **options
    )
    return app


def client(app: Any, client_addr: tuple[str, int] = ("127.0.0.1", 123)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app, raise_app_exceptions=False, client=client_addr)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def call_raw(app: Any, headers: list[tuple[bytes, bytes]], path: str = "/echo") -> Any:
    """Drive the app with raw header bytes (what a server may hand over), return the
    response start message and the body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start, body


def response_id(start: dict[str, Any]) -> str | None:
    values = [v.decode("latin-1") for k, v in start["headers"] if k.lower() == b"x-request-id"]
    assert len(values) <= 1, values
    return values[0] if values else None


async def test_valid_id_is_echoed_and_seen_by_app_and_logs(records: Records) -> None:
    async with client(starlette_app()) as c:
        r = await c.get("/echo", headers={"X-Request-ID": "req-1.A_b"})
    assert r.headers["x-request-id"] == "req-1.A_b"
    assert r.json() == {"id": "req-1.A_b"}
    [record] = [rec for rec in records.records if rec.getMessage() == "handling"]
    assert record.correlation_id == "req-1.A_b"  # type: ignore[attr-defined]
    assert records.format(record) == "req-1.A_b INFO handling"


async def test_id_is_visible_in_background_tasks() -> None:
    background_seen.clear()
    async with client(starlette_app()) as c:
        r = await c.get("/echo", headers={"X-Request-ID": "bg-1"})
    assert r.status_code == 200
    assert background_seen == ["bg-1"]


async def test_missing_id_is_generated_in_uuid4_form() -> None:
    async with client(starlette_app()) as c:
        r1 = await c.get("/echo")
        r2 = await c.get("/echo")
    for r in (r1, r2):
        cid = r.headers["x-request-id"]
        assert HEX32.fullmatch(cid)
        assert uuid.UUID(cid).version == 4
        assert r.json() == {"id": cid}
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]


INVALID = [
    pytest.param(b"abc\r\nSet-Cookie: x=1", id="crlf"),
    pytest.param(b"abc\n", id="trailing-lf"),
    pytest.param(b"abc\x85", id="nel-x85"),
    pytest.param("abc\u2028".encode(), id="u2028-utf8"),
    pytest.param(b"ab\x00c", id="nul"),
    pytest.param(b"a b", id="space"),
    pytest.param("caf\u00e9".encode(), id="non-ascii"),
    pytest.param(b"x" * 65, id="65-chars"),
    pytest.param(b"", id="empty"),
    pytest.param(b"a/b", id="slash"),
    pytest.param(b"<script>", id="angle"),
]


@pytest.mark.parametrize("raw", INVALID)
async def test_invalid_ids_are_replaced_and_logged_without_raw_value(
    raw: bytes, records: Records
) -> None:
    start, body = await call_raw(starlette_app(), [(b"x-request-id", raw)])
    cid = response_id(start)
    assert cid is not None and HEX32.fullmatch(cid)
    assert body == f'{{"id":"{cid}"}}'.encode()
    [line] = [rec for rec in records.records if rec.name == "asgi_metrics.correlation"]
    message = line.getMessage()
    assert cid in message
    if raw:
        assert raw.decode("latin-1") not in message


async def test_64_chars_is_still_valid() -> None:
    start, _ = await call_raw(starlette_app(), [(b"x-request-id", b"y" * 64)])
    assert response_id(start) == "y" * 64


async def test_builtin_rule_on_every_byte_value() -> None:
    """The middleware checks incoming IDs on the raw bytes without the regex; each byte
    value, alone, among letters and digits, or among dashes, is decided as VALID_ID says."""
    app = starlette_app()
    for value in range(256):
        byte = bytes([value])
        for raw in (byte, b"ab" + byte + b"12", b"a-" + byte + b"-1"):
            start, _ = await call_raw(app, [(b"x-request-id", raw)])
            valid = VALID_ID.fullmatch(raw.decode("latin-1")) is not None
            assert (response_id(start) == raw.decode("latin-1")) is valid, raw


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(
    st.binary(max_size=70),
    st.text(alphabet="abcXYZ019._-/ \x85\u00e9", max_size=70).map(str.encode),
))
def test_builtin_rule_on_any_header_value(raw: bytes) -> None:
    start, _ = asyncio.run(call_raw(_rule_app, [(b"x-request-id", raw)]))
    valid = VALID_ID.fullmatch(raw.decode("latin-1")) is not None
    assert (response_id(start) == raw.decode("latin-1")) is valid


_rule_app = starlette_app()


async def test_header_on_404_and_on_excluded_paths() -> None:
    async with client(starlette_app(exclude_paths=["/health"])) as c:
        r404 = await c.get("/nope", headers={"X-Request-ID": "nf-1"})
        health = await c.get("/health", headers={"X-Request-ID": "h-1"})
    assert (r404.status_code, r404.headers["x-request-id"]) == (404, "nf-1")
    assert (health.text, health.headers["x-request-id"]) == ("h-1", "h-1")


async def test_unhandled_exception_500_carries_header_with_add_middleware(
    records: Records,
) -> None:
    app = starlette_app()
    async with client(app) as c:
        r = await c.get("/boom", headers={"X-Request-ID": "err-1"})
    assert r.status_code == 500
    assert r.text == "Internal Server Error"
    assert r.headers["x-request-id"] == "err-1"
    [record] = [rec for rec in records.records if rec.getMessage() == "about to fail"]
    assert record.correlation_id == "err-1"  # type: ignore[attr-defined]
    metrics = (await _metrics(app)).splitlines()
    assert 'http_requests_total{method="GET",route="/boom",status="500"} 1.0' in metrics


async def test_unhandled_exception_500_in_fastapi() -> None:
    api = FastAPI()

    @api.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        raise ValueError(item_id)

    api.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), correlation_id=True)
    async with client(api) as c:
        r = await c.get("/items/3", headers={"X-Request-ID": "fa-1"})
        missing = await c.get("/items/3")
    assert (r.status_code, r.headers["x-request-id"]) == (500, "fa-1")
    assert missing.status_code == 500 and HEX32.fullmatch(missing.headers["x-request-id"])


async def test_custom_500_handler_is_not_shadowed_and_can_read_the_id() -> None:
    async def handler(request: Request, exc: Exception) -> Response:
        cid = get_correlation_id() or ""
        return JSONResponse({"error": "custom", "id": cid}, 500, {"X-Request-ID": cid})

    app = Starlette(routes=[Route("/boom", boom)], exception_handlers={Exception: handler})
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), correlation_id=True)
    async with client(app) as c:
        r = await c.get("/boom", headers={"X-Request-ID": "h-2"})
    assert r.status_code == 500
    assert r.json() == {"error": "custom", "id": "h-2"}
    assert r.headers.get_list("x-request-id") == ["h-2"]


async def test_outermost_wrapping_and_plain_asgi_app() -> None:
    async def plain(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("plain app failed")

    wrapped = MetricsMiddleware(plain, registry=CollectorRegistry(), correlation_id=True)
    with pytest.raises(RuntimeError):  # still raised for the server to log
        _start, _body = await call_raw(wrapped, [(b"x-request-id", b"p-1")])
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [(b"x-request-id", b"p-1")]}
    with pytest.raises(RuntimeError):
        await wrapped(scope, receive, send)
    assert sent[0]["status"] == 500 and response_id(sent[0]) == "p-1"

    inner = starlette_app()
    outer = MetricsMiddleware(
        Starlette(routes=[Route("/boom", boom)]), registry=CollectorRegistry(), correlation_id=True
    )
    for app in (inner, outer):
        async with client(app) as c:
            r = await c.get("/boom", headers={"X-Request-ID": "o-1"})
        assert (r.status_code, r.headers.get_list("x-request-id")) == (500, ["o-1"])


async def test_app_set_header_wins_without_duplicate() -> None:
    async def own(request: Request) -> Response:
        return PlainTextResponse("x", headers={"X-Request-ID": "app-chosen"})

    app = Starlette(routes=[Route("/own", own)])
    app.add_middleware(MetricsMiddleware, registry=CollectorRegistry(), correlation_id=True)
    async with client(app) as c:
        r = await c.get("/own", headers={"X-Request-ID": "in-1"})
    assert r.headers.get_list("x-request-id") == ["app-chosen"]


@pytest.mark.parametrize("name", [b"X-Request-ID", b"X-REQUEST-ID", b"x-request-id"])
async def test_app_set_header_in_any_case_wins(name: bytes) -> None:
    """Raw ASGI apps may send header names in any case; a decoy as long as the name
    (content-type, x-request-ix) must not count as the app's own."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        decoys = [(b"Content-Type", b"text/plain"), (b"X-Request-IX", b"decoy")]
        own = [] if scope["path"] == "/plain" else [(name, b"app-chosen")]
        await send({"type": "http.response.start", "status": 200, "headers": decoys + own})
        await send({"type": "http.response.body", "body": b"x"})

    wrapped = MetricsMiddleware(app, registry=CollectorRegistry(), correlation_id=True)
    start, _ = await call_raw(wrapped, [(b"x-request-id", b"in-1")], "/own")
    assert response_id(start) == "app-chosen"
    start, _ = await call_raw(wrapped, [(b"x-request-id", b"in-2")], "/plain")
    assert response_id(start) == "in-2"


async def test_configurable_header_and_validator() -> None:
    app = starlette_app(
        correlation_header="X-Correlation-ID",
        correlation_id_validator=lambda value: value.startswith("ok-"),
    )
    async with client(app) as c:
        good = await c.get("/echo", headers={"X-Correlation-ID": "ok-" + "z" * 100})
        bad = await c.get("/echo", headers={"X-Correlation-ID": "nope"})
        ignored = await c.get("/echo", headers={"X-Request-ID": "ok-1"})
    assert good.headers["x-correlation-id"] == "ok-" + "z" * 100
    assert "x-request-id" not in good.headers
    assert HEX32.fullmatch(bad.headers["x-correlation-id"])
    assert HEX32.fullmatch(ignored.headers["x-correlation-id"])
    # Even a permissive validator never lets control characters through.
    lax = starlette_app(correlation_id_validator=lambda value: True)
    start, _ = await call_raw(lax, [(b"x-request-id", b"a\r\nb")])
    assert HEX32.fullmatch(response_id(start) or "")


async def test_raising_validator_means_invalid() -> None:
    def broken(value: str) -> bool:
        raise KeyError(value)

    async with client(starlette_app(correlation_id_validator=broken)) as c:
        r = await c.get("/echo", headers={"X-Request-ID": "abc"})
    assert r.status_code == 200 and HEX32.fullmatch(r.headers["x-request-id"])


async def test_trusted_proxies() -> None:
    app = starlette_app(trusted_proxies=["10.0.0.0/8", "::1"])
    async with client(app, ("10.1.2.3", 5)) as c:
        trusted = await c.get("/echo", headers={"X-Request-ID": "proxy-1"})
    async with client(app, ("192.0.2.7", 5)) as c:
        untrusted = await c.get("/echo", headers={"X-Request-ID": "proxy-1"})
    async with client(app, ("::1", 5)) as c:
        v6 = await c.get("/echo", headers={"X-Request-ID": "proxy-2"})
    assert trusted.headers["x-request-id"] == "proxy-1"
    assert HEX32.fullmatch(untrusted.headers["x-request-id"])
    assert v6.headers["x-request-id"] == "proxy-2"


async def test_id_is_never_a_label_and_off_by_default() -> None:
    app = starlette_app()
    async with client(app) as c:
        await c.get("/echo", headers={"X-Request-ID": "label-check-1"})
    assert "label-check-1" not in await _metrics(app)
    assert "label-check-1" not in await _metrics(app, openmetrics=True)

    plain = Starlette(routes=[Route("/echo", echo)])
    plain.add_middleware(MetricsMiddleware, registry=CollectorRegistry())
    async with client(plain) as c:
        r = await c.get("/echo", headers={"X-Request-ID": "x"})
    assert "x-request-id" not in r.headers and r.json() == {"id": None}


async def test_id_is_reset_after_a_request() -> None:
    async with client(starlette_app()) as c:
        await c.get("/echo", headers={"X-Request-ID": "gone-1"})
    assert get_correlation_id() is None


def test_filter_default_outside_requests() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert CorrelationIdFilter(default="none").filter(record)
    assert record.correlation_id == "none"  # type: ignore[attr-defined]


async def _metrics(app: Any, openmetrics: bool = False) -> str:
    headers = {"Accept": "application/openmetrics-text"} if openmetrics else {}
    async with client(app) as c:
        return (await c.get("/metrics", headers=headers)).text

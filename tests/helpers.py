"""Shared test helpers: drive ASGI apps by hand, scrape and read metrics exactly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from asgi_metrics import MetricsMiddleware

Message = dict[str, Any]
Families = dict[str, Any]

#: Labels of the default naming preset's request series.
REQUEST = "http_requests_total"
DURATION = "http_request_duration_seconds"
IN_FLIGHT = "http_requests_in_flight"
EXCEPTIONS = "http_request_exceptions_total"


def wrap(app: Any, **options: Any) -> MetricsMiddleware:
    """``MetricsMiddleware(app)`` with its own registry (unless one is given) and no
    environment influence beyond what the test sets."""
    options.setdefault("registry", CollectorRegistry())
    return MetricsMiddleware(app, **options)


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: Iterable[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A minimal, valid HTTP connection scope; ``extra`` overrides or adds keys."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 12345),
        "server": ("testserver", 80),
    }
    scope.update(extra)
    return scope


async def drive(
    app: Any,
    scope: Mapping[str, Any],
    body: bytes = b"",
    *,
    incoming: Iterable[Message] | None = None,
    sent: list[Message] | None = None,
) -> list[Message]:
    """Call ``app`` with a copy of ``scope``; return every message it sent, in order.

    ``receive`` yields ``incoming`` (default: one ``http.request`` with ``body``), then,
    like a real server, waits until the response is complete and answers
    ``http.disconnect``. Pass ``sent`` to see the messages even if the app raises.
    """
    sent = [] if sent is None else sent
    queue = list(
        incoming
        if incoming is not None
        else [{"type": "http.request", "body": body, "more_body": False}]
    )
    done = asyncio.Event()

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(dict(message))
        if message.get("type") == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(dict(scope), receive, send)
    return sent


def client(app: Any) -> httpx.AsyncClient:
    """An httpx client calling ``app`` in process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def parse(text: str) -> Families:
    """Prometheus text format -> {family name: Metric}."""
    return {family.name: family for family in text_string_to_metric_families(text)}


async def scrape_text(
    app: Any, path: str = "/metrics", headers: Mapping[str, str] | None = None
) -> str:
    async with client(app) as http:
        response = await http.get(path, headers=dict(headers or {}))
    assert response.status_code == 200, response.text
    return response.text  # httpx has undone any Content-Encoding


async def scrape(app: Any, path: str = "/metrics") -> Families:
    """GET ``path`` on ``app`` and parse the Prometheus text format."""
    return parse(await scrape_text(app, path))


def samples(families: Families, name: str) -> list[tuple[dict[str, str], float]]:
    """Every (labels, value) of the sample called ``name`` (e.g. ``http_requests_total``)."""
    out = []
    for family in families.values():
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), float(s.value)))
    return out


def sample(families: Families, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of the one sample ``name`` whose labels are exactly ``labels``; 0.0 if
    there is no such series (use :func:`samples` to assert absence)."""
    want = dict(labels or {})
    found = [value for got, value in samples(families, name) if got == want]
    assert len(found) <= 1, (name, want, found)
    return found[0] if found else 0.0


def routes(families: Families, name: str = REQUEST) -> set[str]:
    """The distinct ``route`` label values of ``name``."""
    return {labels["route"] for labels, _ in samples(families, name)}


def requests(
    families: Families, route: str, method: str = "GET", status: str = "200"
) -> float:
    return sample(families, REQUEST, {"method": method, "route": route, "status": status})


def in_flight(families: Families) -> float:
    """The sum of the in-flight gauge over all methods."""
    return sum(value for _, value in samples(families, IN_FLIGHT))


async def get_all(app: Any, paths: Iterable[str], method: str = "GET") -> list[int]:
    """Send one request per path; return the statuses."""
    async with client(app) as http:
        return [(await http.request(method, path)).status_code for path in paths]


#: The span failures the middlewares survive (what each logs as its failure kind).
SPAN_FAILURES = ("span lookup", "setting the correlation ID span attribute")


@contextlib.contextmanager
def broken_span(broken: str) -> Iterator[None]:
    """Make the current span (through OpenTelemetry's public context API) one whose read
    fails as ``broken`` says: reading its context raises ("span lookup"), or it is a real
    sampled SDK span whose ``set_attribute`` raises."""
    from opentelemetry import context, trace
    from opentelemetry.sdk.trace import TracerProvider

    def fail(*args: Any) -> Any:
        raise RuntimeError("injected")

    span: Any
    if broken == "span lookup":
        span = trace.NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        span.get_span_context = fail
    else:
        span = TracerProvider().get_tracer("test").start_span("server")
        span.set_attribute = fail
    token = context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        context.detach(token)

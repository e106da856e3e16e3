"""Helpers shared by the WSGI, Flask, Django and end-to-end tests: parsing a scrape and
calling a WSGI app the way a server does."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from asgi_metrics import CorrelationIdFilter

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text-format scrape, by (sample name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def requests(samples: Samples, prefix: str = "") -> dict[tuple[str, str, str], float]:
    """``http_requests_total`` as {(method, route, status): count}."""
    out = {}
    for (name, labels), value in samples.items():
        if name == f"{prefix}http_requests_total":
            got = dict(labels)
            out[(got["method"], got["route"], got["status"])] = value
    return out


def exceptions(samples: Samples) -> dict[tuple[str, str, str], float]:
    """``http_request_exceptions_total`` as {(method, route, exception_type): count}."""
    out = {}
    for (name, labels), value in samples.items():
        if name == "http_request_exceptions_total":
            got = dict(labels)
            out[(got["method"], got["route"], got["exception_type"])] = value
    return out


def in_flight(samples: Samples) -> float:
    """The sum of the in-flight gauge over methods."""
    return sum(v for (name, _), v in samples.items() if name == "http_requests_in_flight")


def duration_sum(samples: Samples, method: str, route: str, status: str) -> float:
    key = frozenset({"method": method, "route": route, "status": status}.items())
    return samples[("http_request_duration_seconds_sum", key)]


def environ(path: str = "/", method: str = "GET", **extra: Any) -> dict[str, Any]:
    """A minimal PEP 3333 environ, as a server builds it."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    env.update(extra)
    return env


class Server:
    """Calls a WSGI app like a server: start_response, iterate, close()."""

    def __init__(self) -> None:
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.body_started = False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        if exc_info is not None and self.body_started:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return lambda data: None

    def call(self, app: Any, env: dict[str, Any]) -> bytes:
        result = app(env, self.start_response)
        try:
            chunks = []
            for chunk in result:
                self.body_started = True
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def get(app: Any, path: str = "/", method: str = "GET", **extra: Any) -> tuple[str, bytes]:
    server = Server()
    body = server.call(app, environ(path, method, **extra))
    assert server.status is not None
    return server.status, body


def scrape(app: Any, path: str = "/metrics") -> Samples:
    status, body = get(app, path)
    assert status.startswith("200"), status
    return parse(body.decode())


def chunks_of(iterable: Iterable[bytes]) -> list[bytes]:
    return list(iterable)


class Records(logging.Handler):
    """Collects records after :class:`CorrelationIdFilter` ran, as a real handler would
    format them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(CorrelationIdFilter())
        self.setFormatter(logging.Formatter("%(correlation_id)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def ids_of(self, message: str) -> list[str]:
        """The correlation IDs of the records with this message."""
        return [
            rec.correlation_id  # type: ignore[attr-defined]
            for rec in self.records
            if rec.getMessage() == message
        ]


@contextmanager
def captured_logs() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


#: Invalid incoming IDs as a WSGI server hands them over: header bytes decoded as latin-1.
INVALID_IDS = {
    "crlf": "abc\r\nSet-Cookie: x=1",
    "trailing-lf": "abc\n",
    "nel-x85": "abc\x85",
    "u2028-utf8": "abc\u2028".encode().decode("latin-1"),
    "nul": "ab\x00c",
    "space": "a b",
    "non-ascii": "caf\u00e9",
    "65-chars": "x" * 65,
    "empty": "",
    "slash": "a/b",
}


OtelPoints = dict[frozenset[tuple[str, Any]], Any]


def otel_http_points(reader: Any) -> tuple[OtelPoints, OtelPoints]:
    """From an OpenTelemetry ``InMemoryMetricReader``: the request count per attribute set of
    ``http.server.request.duration``, and the value per attribute set of
    ``http.server.active_requests``."""
    data = reader.get_metrics_data()
    assert data is not None
    found = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
             for m in sm.metrics}
    counts = {frozenset(p.attributes.items()): p.count
              for p in found["http.server.request.duration"].data.data_points}
    active = {frozenset(p.attributes.items()): p.value
              for p in found["http.server.active_requests"].data.data_points}
    return counts, active

"""Every common server, one worker each, with the same known traffic: gunicorn (sync,
gthread, gevent, UvicornWorker), uvicorn (h11; httptools on uvloop), hypercorn (HTTP/1.1;
HTTP/2 cleartext with prior knowledge), granian (ASGI, WSGI), daphne and waitress.

Each serves :mod:`tests.support.apps.fastapi_served` (ASGI) or
:mod:`tests.support.apps.flask_served` (WSGI) as a real subprocess on 127.0.0.1. The
traffic: 30 GET to a templated route (30 ids), 5 POST, 1 HEAD, 4 GET to missing paths, 3 GET
to a route that raises, 1 streaming response read to its end; where the server speaks
websockets, 1 websocket session (echoed, never counted); for ASGI, 1 request whose client
hangs up before the answer (a 499). Then one scrape of ``/metrics``, read sample by sample
with prometheus_client's parser: the exact request counts by (method, route template,
status), the exceptions by type, nothing in flight (the scrape is not counted, not even
while it is served), each histogram's ``_count`` and ``+Inf`` bucket equal to the counter,
and ``promtool check metrics`` clean.

A server whose package is not installed is skipped (``pip install -e '.[test]'`` installs
all of them); an installed one that fails to start fails.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

import httpx
import pytest

from tests.support.promtool import check_metrics
from tests.support.scrape import (
    DURATION,
    IN_FLIGHT,
    Samples,
    exceptions_by_labels,
    parse_samples,
    requests_by_labels,
    series_of,
)
from tests.support.servers import (
    Server,
    daphne,
    granian,
    gunicorn,
    hypercorn,
    require_server,
    uvicorn,
    uvicorn_worker,
    waitress,
)

ASGI_APP = "tests.support.apps.fastapi_served:app"
WSGI_APP = "tests.support.apps.flask_served:app"

GETS, POSTS, MISSING, FAILING = 30, 5, 4, 3
STREAM_CHUNKS = 4  # of 1024 bytes each
RECORDED_WITHIN = 5.0  # seconds: a WSGI server may close (and so record) a body late


@dataclass(frozen=True)
class Case:
    """One server (and worker or protocol) serving one of the two apps."""

    argv: list[str]
    server: tuple[str, ...]  # the server's modules: without one, the case is skipped
    asgi: bool
    websocket: bool = False
    http2: bool = False

    @property
    def needs(self) -> tuple[str, ...]:
        """What the test needs besides the server: the app's framework, client libraries."""
        framework = ("fastapi",) if self.asgi else ("flask",)
        return (*framework, *(("websockets",) if self.websocket else ()),
                *(("h2",) if self.http2 else ()))


CASES = {
    "gunicorn-sync": Case(
        gunicorn(WSGI_APP, "-w", "1", "-k", "sync", multiprocess=False),
        ("gunicorn",), asgi=False),
    "gunicorn-gthread": Case(
        gunicorn(WSGI_APP, "-w", "1", "-k", "gthread", "--threads", "4", multiprocess=False),
        ("gunicorn",), asgi=False),
    "gunicorn-gevent": Case(
        gunicorn(WSGI_APP, "-w", "1", "-k", "gevent", multiprocess=False),
        ("gunicorn", "gevent"), asgi=False),
    "gunicorn-uvicorn-worker": Case(
        gunicorn(ASGI_APP, "-w", "1", "-k", uvicorn_worker(), multiprocess=False),
        ("gunicorn", uvicorn_worker().rpartition(".")[0]), asgi=True, websocket=True),
    "uvicorn-h11": Case(
        uvicorn(ASGI_APP, "--http", "h11"), ("uvicorn", "h11"), asgi=True, websocket=True),
    "uvicorn-httptools-uvloop": Case(
        uvicorn(ASGI_APP, "--http", "httptools", "--loop", "uvloop"),
        ("uvicorn", "httptools", "uvloop"), asgi=True, websocket=True),
    "hypercorn-http1": Case(hypercorn(ASGI_APP), ("hypercorn",), asgi=True, websocket=True),
    # h2c with prior knowledge: httpx with http1=False (and the h2 package) speaks HTTP/2
    # from the first byte of the cleartext connection, scrape included. The websocket
    # session is HTTP/1.1 (the websockets client has no RFC 8441 extended CONNECT).
    "hypercorn-h2c": Case(
        hypercorn(ASGI_APP), ("hypercorn",), asgi=True, websocket=True, http2=True),
    "granian-asgi": Case(granian(ASGI_APP), ("granian",), asgi=True, websocket=True),
    "granian-wsgi": Case(granian(WSGI_APP, interface="wsgi"), ("granian",), asgi=False),
    "daphne": Case(daphne(ASGI_APP), ("daphne",), asgi=True, websocket=True),
    "waitress": Case(waitress(WSGI_APP), ("waitress",), asgi=False),
}


def expected_requests(asgi: bool) -> dict[tuple[str, str, str], float]:
    """The counts the known traffic must leave, by (method, route template, status)."""
    item = "/v1/items/{item_id}" if asgi else "/v1/items/<int:item_id>"
    expected: dict[tuple[str, str, str], float] = {
        ("GET", item, "200"): GETS,
        ("POST", "/v1/items", "200"): POSTS,
        # FastAPI's GET route answers HEAD with 405; Flask's serves HEAD with every GET.
        ("HEAD", item, "405" if asgi else "200"): 1,
        ("GET", "__unmatched__", "404"): MISSING,
        ("GET", "/boom", "500"): FAILING,
        ("GET", "/stream", "200"): 1,
    }
    if asgi:
        # The client that hung up before the answer: every ASGI server tells the app.
        expected[("GET", "/wait-for-disconnect", "499")] = 1
    return expected


def send_traffic(http: httpx.Client, http2: bool) -> None:
    """The known traffic (minus the websocket), each answer checked as it comes."""
    version = "HTTP/2" if http2 else "HTTP/1.1"
    for item_id in range(GETS):
        response = http.get(f"/v1/items/{item_id}")
        assert (response.status_code, response.json()) == (200, {"id": item_id})
        assert response.http_version == version
    for n in range(POSTS):
        response = http.post("/v1/items", content=b"x" * n)
        assert (response.status_code, response.json()) == (200, {"created": n})
    assert http.head("/v1/items/1").content == b""
    for n in range(MISSING):
        assert http.get(f"/missing/{n}").status_code == 404
    # uvicorn closes the connection after an app's exception, even when the 500 was sent
    # in full, without saying so ("Connection: close"): a client reusing it would be reset.
    close = {} if http2 else {"Connection": "close"}
    for _ in range(FAILING):
        assert http.get("/boom", headers=close).status_code == 500
    with http.stream("GET", f"/stream?chunks={STREAM_CHUNKS}") as response:
        assert response.status_code == 200
        assert sum(len(chunk) for chunk in response.iter_bytes()) == 1024 * STREAM_CHUNKS


def hang_up_before_response(port: int) -> None:
    """A request to ``/wait-for-disconnect`` whose client is gone (a reset, over HTTP/1.1)
    before the app answers; the app sees the disconnect within 10 ms."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /wait-for-disconnect HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        time.sleep(0.2)
        # Linger 0: close() sends a reset, gone at once, as a killed client would be.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def websocket_round_trip(port: int) -> None:
    """Two messages echoed over ``/ws``, then a clean close."""
    # Imported here: without websockets the module must still load (and the case skip).
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, close_timeout=5) as ws:
        for word in ("one", "two"):
            ws.send(word)
            assert ws.recv(timeout=5) == f"echo {word}"


def scrape(http: httpx.Client, expected: dict[tuple[str, str, str], float]) -> str:
    """The first scrape showing every request recorded (bounded in time), else the last."""
    deadline = time.monotonic() + RECORDED_WITHIN
    while True:
        response = http.get("/metrics")
        assert response.status_code == 200, response.text
        text = response.text
        if requests_by_labels(parse_samples(text)) == expected or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def histogram_counts(samples: Samples, suffix: str) -> dict[tuple[str, str, str], float]:
    """The duration histogram's ``suffix`` samples (``_count``, ``_sum``, or ``_bucket`` at
    ``+Inf``) by (method, route, status)."""
    found = {}
    for (name, labels), value in samples.items():
        got = dict(labels)
        if name == DURATION + suffix and got.pop("le", "+Inf") == "+Inf":
            found[(got["method"], got["route"], got["status"])] = value
    return found


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_known_traffic_counted_exactly(case: Case) -> None:
    require_server(case.server, case.needs)
    expected = expected_requests(case.asgi)
    with Server(case.argv, startup_timeout=20) as server, httpx.Client(
        base_url=server.url, http1=not case.http2, http2=case.http2, timeout=10
    ) as http:
        send_traffic(http, case.http2)
        if case.websocket:
            websocket_round_trip(server.port)
        if case.asgi:
            hang_up_before_response(server.port)
        text = scrape(http, expected)
        log = server.output()
    samples = parse_samples(text)
    assert requests_by_labels(samples) == expected, log
    assert exceptions_by_labels(samples) == {("GET", "/boom", "RuntimeError"): FAILING}
    # Every method seen is back to 0, the scrape's own GET included: it is not counted.
    assert series_of(text, IN_FLIGHT) == {
        (("method", method),): 0.0 for method in ("GET", "POST", "HEAD")
    }
    assert histogram_counts(samples, "_count") == expected
    assert histogram_counts(samples, "_bucket") == expected
    assert all(value > 0 for value in histogram_counts(samples, "_sum").values())
    # Neither the websocket session nor a scrape left a series in any family.
    routes = {dict(labels).get("route") for _, labels in samples}
    assert not routes & {"/ws", "/metrics"}, routes
    check_metrics(text)

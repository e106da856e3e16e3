"""Correlation IDs under real servers: what reaches the client (and the server's log) for
an unhandled exception in a plain WSGI app, under Werkzeug's server and gunicorn, and that
preforked gunicorn workers never share generated IDs."""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.support.apps.wsgi_echo import wrap
from tests.support.paths import ROOT
from tests.support.servers import free_port
from wsgi_metrics import get_correlation_id
from wsgi_metrics.middleware import Environ, StartResponse

HEX32 = re.compile(r"[0-9a-f]{32}")


# --- real servers: what reaches the client for an unhandled exception ----------------------


def fetch(port: int, path: str, request_id: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"X-Request-ID": request_id} if request_id else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_werkzeug_server_sends_our_500_and_logs_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def peek(env: Environ, start_response: StartResponse) -> list[bytes]:
        # Outside the middleware, in the server's (reused) thread: no ID may be left over.
        if env["PATH_INFO"] == "/peek":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(get_correlation_id()).encode()]
        return app(env, start_response)

    app = wrap()
    server = make_server("127.0.0.1", 0, peek)  # one thread, serving request after request
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.ERROR, logger="werkzeug"):
            status, headers, body = fetch(server.port, "/boom", "srv-1")
            # The server logs after the response went out (it is complete: Content-Length).
            deadline = time.monotonic() + 5
            while "RuntimeError: unhandled" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.01)
        assert (status, headers["x-request-id"], body) == (500, "srv-1", b"Internal Server Error")
        assert "Error on request" in caplog.text and "RuntimeError: unhandled" in caplog.text
        assert fetch(server.port, "/stream", "srv-2")[2] == b"a=srv-2;b=srv-2;"
        assert fetch(server.port, "/peek")[2] == b"None"
    finally:
        server.shutdown()
        thread.join(5)


def test_gunicorn_gthread_sends_our_500_logs_it_and_leaks_no_id(tmp_path: Path) -> None:
    """gunicorn with one reused pool thread: the client gets our 500 with the header, the
    server logs the traceback, and the next request on that thread sees no leftover ID."""
    log = tmp_path / "gunicorn.log"
    with _gunicorn("-w", "1", "-k", "gthread", "--threads", "1",
                   "--error-logfile", str(log)) as port:
        status, headers, body = fetch(port, "/boom", "gu-1")
        assert (status, headers["x-request-id"], body) == (500, "gu-1", b"Internal Server Error")
        assert fetch(port, "/peek")[2] == b"None"
        assert fetch(port, "/stream", "gu-2")[2] == b"a=gu-2;b=gu-2;"
        assert fetch(port, "/peek")[2] == b"None"
        deadline = time.monotonic() + 5
        while "RuntimeError: unhandled in plain WSGI" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert "Error handling request" in log.read_text()


def test_gunicorn_preforked_workers_never_share_generated_ids() -> None:
    """``--preload``: the master imported the app (which drew an ID, filling the pool) and
    forked three workers from it. Every generated ID is distinct, across workers too."""
    with _gunicorn("--preload", "-w", "3", "-k", "sync") as port, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fetch(port, "/pid"), range(90)))
    pids = {body for _, _, body in answers}
    ids = [headers["x-request-id"] for _, headers, _ in answers]
    assert len(pids) >= 2, pids  # the requests did spread over the workers
    assert all(HEX32.fullmatch(cid) for cid in ids)
    assert len(set(ids)) == len(ids) == 90


@contextlib.contextmanager
def _gunicorn(*options: str) -> Iterator[int]:
    """gunicorn serving tests.support.apps.wsgi_correlation on a free loopback port, once it
    answers; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--pythonpath", str(ROOT),
         *options, "-b", f"127.0.0.1:{port}", "tests.support.apps.wsgi_correlation:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                fetch(port, "/peek")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no gunicorn"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


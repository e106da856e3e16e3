"""Run real app servers (gunicorn, uvicorn, granian, hypercorn, daphne, waitress) on
loopback for tests, and talk to them.

Every server runs in its own process group and is always stopped (SIGTERM, then SIGKILL
after a timeout) when the context is left, with all of its workers. One function per
server builds its command line (``{port}`` stands for the free port the :class:`Server`
picks); :func:`require_server` skips a test whose server is not installed.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.binaries import running_in_ci
from tests.support.paths import ROOT
from tests.support.scrape import Samples, parse_samples, requests_by_labels

PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_server(server: Sequence[str], needs: Sequence[str] = ()) -> None:
    """Skip the calling test when a module of the ``server`` under test (e.g. ``gunicorn``,
    ``gevent``) cannot be imported: that server is not installed here.

    Once the server is installed it never drops out silently: a missing module of what
    the test ``needs`` besides (the app's framework, a client library) skips it only
    outside CI, and fails it under ``CI``; a server that then fails to start fails.
    """
    missing = [name for name in server if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"server not installed: {', '.join(missing)} (pip install -e '.[test]')")
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"{', '.join(server)} installed, but not {', '.join(missing)}"
        if running_in_ci():
            pytest.fail(f"{reason}: required when CI is set", pytrace=False)
        pytest.skip(f"{reason} (pip install -e '.[test]')")


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET ``url`` on a fresh connection (so the server's workers share the requests)."""
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def http_request(server: Server, path: str, method: str = "GET") -> tuple[int, bytes]:
    """``method path`` on a fresh connection to ``server``: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def scrape_until(server: Server, expected: dict[tuple[str, str, str], float]) -> Samples:
    """The server's samples once its request counts are ``expected`` (or after 5 s, for
    the caller's exact assertions to report the difference): a response is recorded when
    its last body message is handed to the server, which may be a moment after the client
    read it."""
    deadline = time.monotonic() + 5
    while True:
        samples = parse_samples(server.metrics())
        if requests_by_labels(samples) == expected or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


class Server:
    """A server command on a free loopback port; ``{port}`` in ``argv`` is replaced."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        multiproc_dir: str | None = None,
        startup_timeout: float = 30.0,
        separate_stderr: bool = False,
    ) -> None:
        self.port = free_port()
        self.argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.env = {
            key: value for key, value in os.environ.items()
            if key not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
            and not key.startswith("HTTP_METRICS_")
        }
        self.env["PYTHONPATH"] = str(ROOT)
        if multiproc_dir is not None:
            self.env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
        self.env.update(env or {})
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        # With separate_stderr, stderr goes here and output() is stdout only.
        self._err = tempfile.TemporaryFile() if separate_stderr else None  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=self._err or subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.output()}")
            try:
                if http_get(f"{self.url}/metrics", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        output = self.output()
        self.stop()
        raise RuntimeError(f"server did not start:\n{output}")

    def output(self) -> str:
        if self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stderr(self) -> str:
        """What the server wrote to stderr (with ``separate_stderr=True``)."""
        if self._err is None or self._err.closed:
            return ""
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def worker_pids(self) -> set[int]:
        """The PIDs of the server's direct children (its workers)."""
        assert self.proc is not None
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as file:
            return {int(pid) for pid in file.read().split()}

    def metrics(self) -> str:
        status, body = http_get(f"{self.url}/metrics")
        assert status == 200, body
        return body

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
            except ProcessLookupError:
                pass
        # Workers that outlived their parent (shouldn't happen; never leave them behind).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None
        self._log.close()
        if self._err is not None:
            self._err.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def gunicorn(app: str, *args: str, multiprocess: bool = True) -> list[str]:
    """A gunicorn command line; with ``multiprocess`` (the default) with the test config
    (``child_exit`` and the clean-up of ``PROMETHEUS_MULTIPROC_DIR``, which must be set),
    without it a plain gunicorn (the single-process store)."""
    config = ["--config", "python:tests.support.apps.gunicorn_conf"] if multiprocess else []
    return [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", *config, *args, app]


def uvicorn_worker() -> str:
    """The gunicorn worker class that runs uvicorn: ``uvicorn_worker.UvicornWorker`` (the
    ``uvicorn-worker`` package) where installed, else the deprecated
    ``uvicorn.workers.UvicornWorker`` that older uvicorn releases ship."""
    if importlib.util.find_spec("uvicorn_worker") is not None:
        return "uvicorn_worker.UvicornWorker"
    return "uvicorn.workers.UvicornWorker"


def uvicorn(app: str, *args: str) -> list[str]:
    return [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", *args, app]


def granian(app: str, *args: str, interface: str = "asgi") -> list[str]:
    """A granian command line serving ``app`` (an ASGI app, or WSGI with
    ``interface="wsgi"``)."""
    return [str(BIN / "granian"), "--interface", interface, "--host", "127.0.0.1", "--port",
            "{port}", *args, app]


def hypercorn(app: str, *args: str) -> list[str]:
    return [str(BIN / "hypercorn"), "--bind", "127.0.0.1:{port}", *args, app]


def daphne(app: str, *args: str) -> list[str]:
    """A daphne command line serving the ASGI app ``app``."""
    return [str(BIN / "daphne"), "--bind", "127.0.0.1", "--port", "{port}", *args, app]


def waitress(app: str, *args: str) -> list[str]:
    """A waitress command line serving the WSGI app ``app``."""
    return [str(BIN / "waitress-serve"), "--listen", "127.0.0.1:{port}", *args, app]

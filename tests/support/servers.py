"""Run real app servers (gunicorn, uvicorn, granian, hypercorn) on loopback for tests, and
talk to them.

Every server runs in its own process group and is always stopped (SIGTERM, then SIGKILL
after a timeout) when the context is left, with all of its workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tests.support.paths import ROOT
from tests.support.prometheus_server import free_port

PYTHON = sys.executable
BIN = Path(PYTHON).parent


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET ``url`` on a fresh connection (so the server's workers share the requests)."""
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


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


def gunicorn(app: str, *args: str) -> list[str]:
    """A gunicorn command line with the test config (``child_exit`` and the clean-up)."""
    return [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", "--config",
            "python:tests.support.apps.gunicorn_conf", *args, app]


def uvicorn(app: str, *args: str) -> list[str]:
    return [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", "{port}",
            "--log-level", "warning", *args, app]


def granian(app: str, *args: str) -> list[str]:
    """A granian command line serving the ASGI app ``app``."""
    return [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port",
            "{port}", *args, app]


def hypercorn(app: str, *args: str) -> list[str]:
    return [str(BIN / "hypercorn"), "--bind", "127.0.0.1:{port}", *args, app]

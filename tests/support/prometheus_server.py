"""Run a real Prometheus server on loopback for tests.

Example::

    with PrometheusServer(["127.0.0.1:8000"], scrape_interval="1s") as prom:
        prom.wait_for_scrapes(2)
        result = prom.query("sum(rate(http_requests_total[1m]))")

The server gets a generated config (scrape targets, scrape interval, optional
rule files), a free loopback port, a temporary TSDB directory and is always
terminated (then killed after a timeout) when the context is left.  If the
``prometheus`` binary is missing the test is skipped, or fails when ``CI`` is set.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from tests.support.binaries import require_binary
from tests.support.servers import free_port

T = TypeVar("T")

__all__ = ["PrometheusAPIError", "PrometheusServer"]


class PrometheusAPIError(AssertionError):
    """The Prometheus HTTP API answered with ``status: error`` (or not at all)."""

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusServer:
    """A real ``prometheus`` process scraping the given loopback targets.

    ``targets`` is either a list of ``"127.0.0.1:port"`` strings (one job named
    ``job_name``) or a mapping ``{job_name: [targets...]}``.
    """

    def __init__(
        self,
        targets: Sequence[str] | Mapping[str, Sequence[str]],
        *,
        scrape_interval: str = "1s",
        evaluation_interval: str | None = None,
        rule_files: Sequence[str | Path] = (),
        extra_flags: Sequence[str] = (),
        job_name: str = "app",
        metrics_path: str = "/metrics",
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        binary: str | None = None,
    ) -> None:
        if isinstance(targets, Mapping):
            self.jobs: dict[str, list[str]] = {job: list(t) for job, t in targets.items()}
        else:
            self.jobs = {job_name: list(targets)}
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.extra_flags = list(extra_flags)
        self.metrics_path = metrics_path
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._binary = binary
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log_file: Any = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``."""
        if self.port is None:
            raise RuntimeError("Prometheus is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def workdir(self) -> Path:
        """Temporary directory holding config, TSDB and log."""
        if self._tmp is None:
            raise RuntimeError("Prometheus is not running")
        return Path(self._tmp.name)

    def config(self) -> dict[str, Any]:
        """The Prometheus configuration (a dict; written as JSON, which is valid YAML)."""
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": targets}],
                }
                for job, targets in self.jobs.items()
            ],
        }

    def start(self) -> PrometheusServer:
        """Start Prometheus and wait until ``/-/ready`` answers 200."""
        if self._proc is not None:
            raise RuntimeError("Prometheus already started")
        binary = self._binary or require_binary("prometheus", "PROMETHEUS_BIN")
        self._tmp = tempfile.TemporaryDirectory(prefix="prometheus-test-")
        workdir = Path(self._tmp.name)
        config_path = workdir / "prometheus.yml"
        config_path.write_text(json.dumps(self.config(), indent=2))
        try:
            # A port picked by free_port() can be taken by someone else before
            # Prometheus binds it: retry a few times with a new port.
            for attempt in range(3):
                self.port = free_port(self.host)
                self._log_file = open(workdir / f"prometheus-{attempt}.log", "wb")  # noqa: SIM115
                self._proc = subprocess.Popen(
                    [
                        binary,
                        f"--config.file={config_path}",
                        f"--storage.tsdb.path={workdir / 'data'}",
                        f"--web.listen-address={self.host}:{self.port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=info",
                        *self.extra_flags,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_file,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                )
                if self._wait_ready():
                    return self
                log = self.log()
                self._terminate()
                if "address already in use" not in log:
                    raise RuntimeError(f"Prometheus did not become ready:\n{log[-4000:]}")
            raise RuntimeError("Prometheus could not bind a free port after 3 attempts")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        return False

    def log(self) -> str:
        """Everything the current Prometheus process has logged so far."""
        if self._log_file is None:
            return ""
        self._log_file.flush()
        return Path(self._log_file.name).read_text("utf-8", "replace")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=self.stop_timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """Terminate Prometheus (kill after ``stop_timeout``) and remove its files."""
        try:
            self._terminate()
        finally:
            self.port = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP API
    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise PrometheusAPIError on error."""
        url = f"{self.url}/api/v1/{path.lstrip('/')}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as err:
            # 400/422/503 carry a JSON body with errorType and error
            raw = err.read()
            err.close()
            try:
                body = json.loads(raw)
            except ValueError:
                raise PrometheusAPIError(f"HTTP {err.code} for {url}: {raw[:500]!r}") from err
        if body.get("status") != "success":
            raise PrometheusAPIError(
                f"{body.get('errorType')}: {body.get('error')} (GET {url})", body.get("errorType")
            )
        return body.get("data")

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query (at unix time ``at``, default now); returns the ``result`` list.

        ``[]`` means no data.
        A scalar or string result is returned as a one-element list
        ``[{"metric": {}, "value": [ts, "v"]}]``.
        """
        params = {"query": promql}
        if at is not None:
            params["time"] = repr(at)
        return _result_list(self.api("query", params))

    def query_range(
        self, promql: str, start: float, end: float, step: float | str = "1s"
    ) -> list[dict[str, Any]]:
        """Range query; returns the matrix ``result`` list."""
        params = {"query": promql, "start": repr(start), "end": repr(end), "step": str(step)}
        return _result_list(self.api("query_range", params))

    def targets(self, state: str = "active") -> list[dict[str, Any]]:
        """The ``activeTargets`` (or ``droppedTargets`` for ``state="dropped"``)."""
        data = self.api("targets", {"state": state})
        key = "droppedTargets" if state == "dropped" else "activeTargets"
        return list(data.get(key) or [])

    def rules(self, rule_type: str | None = None) -> list[dict[str, Any]]:
        """Rule groups as reported by ``/api/v1/rules`` (``rule_type``: "alert"/"record")."""
        data = self.api("rules", {"type": rule_type} if rule_type else None)
        return list(data.get("groups") or [])

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts."""
        return list(self.api("alerts").get("alerts") or [])

    # ------------------------------------------------------------------ waiting
    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 15.0,
        interval: float = 0.2,
        message: str = "condition",
    ) -> T:
        """Call ``predicate`` until it returns a truthy value and return that value.

        PrometheusAPIError raised by the predicate counts as "not yet".  Raises
        TimeoutError (with the last value or error) after ``timeout`` seconds, or
        RuntimeError if the Prometheus process died meanwhile.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"Prometheus exited while waiting:\n{self.log()[-4000:]}")
            try:
                value = predicate()
                if value:
                    return value
                last = value
            except PrometheusAPIError as err:
                last = err
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {message}; last={last!r}"
                )
            time.sleep(interval)

    def wait_for_scrapes(self, count: int = 2, timeout: float = 20.0) -> None:
        """Wait until every target was scraped successfully at least ``count`` times."""
        expected = sum(len(t) for t in self.jobs.values())

        def done() -> bool:
            # sum_over_time(up) = number of successful scrapes in the window
            series = self.query("sum_over_time(up[10m])")
            return len(series) >= expected and all(float(s["value"][1]) >= count for s in series)

        self.wait_for(done, timeout=timeout, message=f"{count} successful scrapes of each target")


def _result_list(data: Any) -> list[dict[str, Any]]:
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return [{"metric": {}, "value": result}]
    return list(result or [])

"""A process without a middleware (DirectoryCollector, start_metrics_server) shows what a
worker's own /metrics shows: a worker process in multiprocess mode and reader processes,
all real Python processes sharing one directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.processes import run_python

# -- a process without a middleware shows what a worker's /metrics shows -----------------

# A "worker": a real middleware in multiprocess mode records known traffic, prints its own
# /metrics (through the ASGI endpoint), then stays alive (its in-flight gauge file counts
# only while it lives) until the test closes its stdin.
WORKER = """
    import asyncio, json, sys
    from prometheus_client import CollectorRegistry
    from asgi_metrics import MetricsMiddleware

    async def app(scope, receive, send):
        status = 500 if scope["path"] == "/fail" else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = MetricsMiddleware(
        app, registry=CollectorRegistry(), route_resolver=lambda scope: scope["path"],
        **json.loads(sys.argv[1]),
    )

    async def call(path):
        body = []

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            if message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        scope = {"type": "http", "method": "GET", "path": path, "headers": [],
                 "query_string": b""}
        await middleware(scope, receive, send)
        return b"".join(body).decode()

    async def main():
        for index in range(int(sys.argv[2])):
            await call(["/a", "/b", "/fail"][index % 3])
        sys.stdout.write(await call("/metrics") + "\\n--END--\\n")
        sys.stdout.flush()
        sys.stdin.read()

    asyncio.run(main())
"""

# A process with no middleware: the directory through DirectoryCollector in a fresh
# registry and prometheus_client's generate_latest, and through start_metrics_server.
READER = """
    import sys
    from prometheus_client import CollectorRegistry, generate_latest
    from asgi_metrics import start_metrics_server
    from asgi_metrics.multiprocess import DirectoryCollector
    from tests.support.servers import http_get

    registry = CollectorRegistry()
    DirectoryCollector(registry=registry)
    sys.stdout.write(generate_latest(registry).decode() + "\\n--END--\\n")
    with start_metrics_server(0, registry=CollectorRegistry()) as server:
        status, body = http_get(server.url)
        assert status == 200, body
        sys.stdout.write(body)
"""


def families(text: str) -> dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]],
                                                      float]]]:
    """``{family: (type, {(sample name, labels): value})}`` of an exposition, parsed by
    prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    # The workers' process metrics (memory, CPU) are of the moment each view was rendered,
    # so they are left out here (tests/e2e/test_multiprocess_process_metrics.py), and so are
    # the library's scrape counts and render times, which each view adds to
    # (tests/e2e/test_multiprocess_self_metrics.py).
    parsed = [family for family in text_string_to_metric_families(text)
              if not family.name.startswith("process_") and "_metrics_scrape" not in family.name]
    names = [family.name for family in parsed]
    assert len(names) == len(set(names)), f"a family shown twice: {names}"
    return {
        family.name: (family.type, {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples
        })
        for family in parsed
    }


def worker_and_readers(directory: Path, options: dict[str, Any], requests: int) -> list[str]:
    """The worker's own /metrics, then the two views of a process without middleware."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(directory), PYTHONPATH=str(ROOT))
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), json.dumps(options), str(requests)],
        env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert worker.stdout is not None and worker.stdin is not None
        lines = []
        for line in worker.stdout:  # bounded: the worker prints one exposition and waits
            if line == "--END--\n":
                break
            lines.append(line)
        assert lines, worker.communicate(timeout=30)[1]
        reader = run_python(READER, {"PROMETHEUS_MULTIPROC_DIR": str(directory)})
        assert reader.returncode == 0, reader.stderr
        worker.stdin.close()
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return ["".join(lines), *reader.stdout.split("\n--END--\n")]


def test_directory_collector_shows_what_a_worker_shows_with_namespace(tmp_path: Path) -> None:
    options = {"namespace": "shop", "const_labels": {"service": "api"}}
    own, collected, served = (
        families(text) for text in worker_and_readers(tmp_path, options, 30)
    )
    counter = own["shop_http_requests"]
    assert counter[0] == "counter"
    assert counter[1] == {
        ("shop_http_requests_total",
         (("method", "GET"), ("route", route), ("service", "api"), ("status", status))): 10.0
        for route, status in (("/a", "200"), ("/b", "200"), ("/fail", "500"))
    }
    assert "shop_http_request_duration_seconds" in own
    for view in (collected, served):
        assert view == own
    # Derived exactly: every counter sample is its histogram's _count.
    counts = {labels: value for (name, labels), value in
              collected["shop_http_request_duration_seconds"][1].items()
              if name.endswith("_count")}
    assert {labels: value for (_, labels), value in
            collected["shop_http_requests"][1].items()} == counts


def test_directory_collector_shows_what_a_worker_shows_before_any_request(
    tmp_path: Path,
) -> None:
    own, collected, served = (
        families(text) for text in worker_and_readers(tmp_path, {}, 0)
    )
    # Nothing recorded yet: the worker shows its (empty) request counter all the same.
    assert own == {"http_requests": ("counter", {})}
    assert collected == own and served == own


def test_directory_collector_with_otel_naming(tmp_path: Path) -> None:
    own, collected, served = (
        families(text) for text in worker_and_readers(tmp_path, {"naming": "otel"}, 30)
    )
    # The OpenTelemetry preset has no separate request counter: the histogram's _count is
    # the request count, everywhere.
    assert "http_server_request_duration_seconds" in own
    assert not any("requests" in name for name in own if "active" not in name)
    assert collected == own and served == own

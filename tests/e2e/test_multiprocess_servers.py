"""Multiprocess mode under real servers: gunicorn (sync, gthread, uvicorn workers) and
``uvicorn --workers``, on loopback. A scrape answered by any worker shows the sum over all
of them; killing or recycling workers never makes a counter go backwards; the in-flight
gauge comes back to 0 after a worker is killed mid-request."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.scrape import samples_by_label_string, total
from tests.support.servers import (
    BIN,
    Server,
    free_port,
    gunicorn,
    http_get,
    uvicorn,
    uvicorn_worker,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

SERVERS = {
    "gunicorn-sync": gunicorn("tests.support.apps.multiprocess_wsgi:app", "-w", "3", "-k", "sync",
                              "--timeout", "120"),
    "gunicorn-gthread": gunicorn("tests.support.apps.multiprocess_wsgi:app", "-w", "2",
                                 "-k", "gthread", "--threads", "4", "--timeout", "120"),
    "gunicorn-uvicorn-worker": gunicorn("tests.support.apps.multiprocess_asgi:app", "-w", "2", "-k",
                                        uvicorn_worker(), "--timeout", "120"),
    "uvicorn-workers": uvicorn("tests.support.apps.multiprocess_asgi:app", "--workers", "2"),
}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {"HANG_PID_FILE": str(tmp_path / "hang.pid")}
    with Server(SERVERS[request.param], env=env, multiproc_dir=str(directory)) as running:
        running.hang_pid_file = tmp_path / "hang.pid"  # type: ignore[attr-defined]
        running.directory = directory  # type: ignore[attr-defined]
        yield running


def send_traffic(server: Server, count: int) -> tuple[dict[str, int], set[int]]:
    """``count`` requests: /pid, /fail and /sleep/1 in turn. Returns the requests sent per
    route and the PIDs of the workers that answered /pid."""
    sent: dict[str, int] = {}
    pids: set[int] = set()
    for index in range(count):
        path, route = [("/pid", "/pid"), ("/fail", "/fail"), ("/sleep/1", "/sleep/{ms}")][index % 3]
        status, body = http_get(server.url + path)
        assert status in (200, 500)
        if path == "/pid":
            pids.add(int(body))
        sent[route] = sent.get(route, 0) + 1
    return sent, pids


def assert_every_scrape_shows(server: Server, sent: dict[str, int], scrapes: int = 12) -> str:
    # A WSGI request is recorded when the server calls close() on its body, which gunicorn
    # does after the last byte went out: the client can have its response (and ask for
    # /metrics, served by another worker or thread) a moment before the count moves. So
    # first wait, briefly, for the last request to land; from then on every scrape must
    # show exactly what was sent.
    deadline = time.monotonic() + 5
    while total(server.metrics(), "http_requests_total") < sum(sent.values()):
        if time.monotonic() > deadline:
            break  # the exact assertions below report what is missing
        time.sleep(0.02)
    text = ""
    for _ in range(scrapes):
        text = server.metrics()
        assert total(text, "http_requests_total") == sum(sent.values()), text
        for route, count in sent.items():
            assert total(text, "http_requests_total", f'route="{route}"') == count
            assert total(text, "http_request_duration_seconds_count",
                         f'route="{route}"') == count
        assert total(text, "http_requests_total", 'status="500"') == sent["/fail"]
    return text


def in_flight(server: Server) -> float:
    return total(server.metrics(), "http_requests_in_flight")


def test_every_scrape_shows_the_sum_over_all_workers(server: Server) -> None:
    sent, pids = send_traffic(server, 90)
    assert len(server.worker_pids()) >= 2
    assert_every_scrape_shows(server, sent)
    assert in_flight(server) == 0
    # More traffic later adds up the same way.
    more, more_pids = send_traffic(server, 30)
    assert_every_scrape_shows(server, {k: sent[k] + more[k] for k in sent})
    # The requests were really spread over several workers (new connection each).
    assert len(pids | more_pids) >= 2, "all requests went to one worker"


def test_kill_9_mid_request(server: Server) -> None:
    sent, _ = send_traffic(server, 30)
    before = assert_every_scrape_shows(server, sent, scrapes=3)
    hang_pid_file: Path = server.hang_pid_file  # type: ignore[attr-defined]
    thread = threading.Thread(target=lambda: _ignore_errors(server.url + "/hang"), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not (hang_pid_file.exists() and hang_pid_file.read_text()):
        assert time.monotonic() < deadline, "the /hang request never started"
        time.sleep(0.05)
    victim = int(hang_pid_file.read_text())
    assert victim in server.worker_pids()
    assert in_flight(server) == 1
    os.kill(victim, signal.SIGKILL)
    # Back to 0: gunicorn's child_exit hook, or the sweep at scrape time (uvicorn).
    deadline = time.monotonic() + 15
    while in_flight(server) != 0:
        assert time.monotonic() < deadline, "in-flight gauge stuck after kill -9"
        time.sleep(0.2)
    after = assert_every_scrape_shows(server, sent, scrapes=6)
    for name in ("http_requests_total", "http_request_duration_seconds_bucket"):
        assert samples_by_label_string(after, name) == samples_by_label_string(before, name)
    # The server replaces the worker and keeps counting from where the total was.
    more, _ = send_traffic(server, 15)
    assert_every_scrape_shows(server, {k: sent[k] + more[k] for k in sent})


def _ignore_errors(url: str) -> None:
    with contextlib.suppress(OSError):
        http_get(url, timeout=90)


# Not with UvicornWorker: a recycled uvicorn worker resets connections it has accepted
# but not answered yet, so the test could not know what was sent.
@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_max_requests_recycling_keeps_totals_and_bounds_files(
    worker: str, tmp_path: Path
) -> None:
    argv = gunicorn("tests.support.apps.multiprocess_wsgi:app", "-w", "2", "-k", worker,
                    "--max-requests", "4")
    with Server(argv, multiproc_dir=str(tmp_path)) as server:
        sent: dict[str, int] = {"/pid": 0, "/fail": 0, "/sleep/{ms}": 0}
        pids: set[int] = set()
        for _ in range(6):
            more, more_pids = send_traffic(server, 15)
            pids |= more_pids
            sent = {k: sent[k] + more[k] for k in sent}
            assert_every_scrape_shows(server, sent, scrapes=3)
        assert len(pids) >= 6, "workers were not recycled"
        # Dead workers' files were merged: what is left is the archives plus a few files
        # per live (or just replaced) worker, not two per worker that ever ran.
        db_files = sorted(p.name for p in tmp_path.glob("*.db"))
        assert "histogram_archive.db" in db_files
        assert len(db_files) <= 2 + 2 * 4, db_files


def our_families(text: str) -> dict[str, tuple[str, dict[tuple[str, tuple[Any, ...]], float]]]:
    """``{family: (type, {(sample name, labels): value})}`` of our families (``http_*``),
    parsed by prometheus_client's parser. Fails when a family is shown twice."""
    # The library's scrape counts and render times change with every scrape (each view
    # counts itself), so they are left out (tests/e2e/test_multiprocess_self_metrics.py).
    parsed = [family for family in text_string_to_metric_families(text)
              if family.name.startswith("http_") and "_metrics_scrape" not in family.name]
    names = [family.name for family in parsed]
    assert len(names) == len(set(names)), f"a family shown twice: {names}"
    return {
        family.name: (family.type, {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples
        })
        for family in parsed
    }


@pytest.mark.parametrize("app,worker", [
    ("tests.support.apps.multiprocess_wsgi:app", "sync"),
    ("tests.support.apps.multiprocess_asgi:app", uvicorn_worker()),
], ids=["sync", "uvicorn-worker"])
def test_master_listener_shows_what_a_worker_shows(app: str, worker: str, tmp_path: Path) -> None:
    """``start_metrics_server`` in the gunicorn arbiter (no middleware there) shows the
    same families and values as a worker's own ``/metrics``, ``http_requests_total``
    included."""
    port = free_port()
    argv = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", "--config",
            "python:tests.support.apps.gunicorn_master_metrics_conf", "-w", "3", "-k", worker,
            "--timeout", "120", app]
    master_url = f"http://127.0.0.1:{port}/metrics"
    with Server(argv, env={"MASTER_METRICS_PORT": str(port)},
                multiproc_dir=str(tmp_path)) as server:
        # Before any request: the worker shows its request counter with no samples yet.
        status, master = http_get(master_url)
        assert status == 200, master
        assert our_families(master) == our_families(server.metrics())
        assert "http_requests" in our_families(master)
        sent, pids = send_traffic(server, 60)
        # The kernel picks the worker per connection; on a busy machine one worker can
        # take a whole batch. More batches (bounded) until two workers have answered.
        for _ in range(10):
            if len(pids) >= 2:
                break
            time.sleep(0.2)
            more, more_pids = send_traffic(server, 30)
            pids |= more_pids
            sent = {k: sent.get(k, 0) + more.get(k, 0) for k in {*sent, *more}}
        assert len(pids) >= 2, "all requests went to one worker"
        assert_every_scrape_shows(server, sent, scrapes=3)
        for _ in range(3):  # a worker each time, chosen by the kernel
            status, master = http_get(master_url)
            assert status == 200, master
            assert total(master, "http_requests_total") == sum(sent.values())
            for route, count in sent.items():
                assert total(master, "http_requests_total", f'route="{route}"') == count
            assert our_families(master) == our_families(server.metrics())

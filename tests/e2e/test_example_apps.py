"""End to end: the example apps under real servers on 127.0.0.1 (gunicorn for Flask and
Django WSGI, uvicorn for Django ASGI), known traffic, a real scrape, exact counts, and
``promtool check metrics`` on the output."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.promtool import check_metrics
from tests.support.scrape import (
    Samples,
    exceptions_by_labels,
    in_flight,
    parse_samples,
    requests_by_labels,
)
from tests.support.servers import free_port

BIN = Path(sys.executable).parent
FLASK_DIR = ROOT / "example_apps" / "flask_app"
DJANGO_DIR = ROOT / "example_apps" / "django_app"


def call(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[int]:
    kind: str = request.param
    port = free_port()
    bind = f"127.0.0.1:{port}"
    gunicorn = [str(BIN / "gunicorn"), "--pythonpath", str(ROOT), "-w", "1", "-b", bind]
    commands = {
        "flask-gunicorn": ([*gunicorn, "--chdir", str(FLASK_DIR), "app:app"], FLASK_DIR),
        "django-gunicorn": (
            [*gunicorn, "--chdir", str(DJANGO_DIR), "demo_project.wsgi"], DJANGO_DIR
        ),
        "django-uvicorn": (
            [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
             "--app-dir", str(DJANGO_DIR), "demo_project.asgi:application"],
            DJANGO_DIR,
        ),
    }
    command, cwd = commands[kind]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{cwd}"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if call(port, "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def scrape_until(port: int, expected: dict[tuple[str, str, str], float]) -> tuple[Samples, str]:
    # The last request may be closed (and recorded) a moment after its bytes arrived.
    deadline = time.monotonic() + 5
    while True:
        status, body = call(port, "/metrics")
        assert status == 200
        text = body.decode()
        samples = parse_samples(text)
        if requests_by_labels(samples) == expected or time.monotonic() > deadline:
            return samples, text
        time.sleep(0.05)


def traffic(port: int, plan: list[tuple[str, str, int, int]]) -> None:
    for method, path, status, times in plan:
        for _ in range(times):
            assert call(port, path, method)[0] == status, (method, path)


@pytest.mark.parametrize("server", ["flask-gunicorn"], indirect=True)
def test_flask_under_gunicorn(server: int) -> None:
    traffic(server, [
        ("GET", "/", 200, 2),
        ("GET", "/api/users/1", 200, 3),
        ("GET", "/api/users/500", 404, 1),
        ("POST", "/api/users/1", 405, 1),
        ("GET", "/api/boom", 500, 2),
        ("GET", "/api/stream", 200, 2),
        ("GET", "/missing", 404, 1),
        ("GET", "/healthz", 200, 3),
    ])
    expected = {
        ("GET", "/", "200"): 2,
        ("GET", "/api/users/<int:user_id>", "200"): 3,
        ("GET", "/api/users/<int:user_id>", "404"): 1,
        ("POST", "__unmatched__", "405"): 1,
        ("GET", "/api/boom", "500"): 2,
        ("GET", "/api/stream", "200"): 2,
        ("GET", "__unmatched__", "404"): 1,
    }
    samples, text = scrape_until(server, expected)
    assert requests_by_labels(samples) == expected
    assert exceptions_by_labels(samples) == {("GET", "/api/boom", "RuntimeError"): 2}
    assert in_flight(samples) == 0
    check_metrics(text)


DJANGO_PLAN = [
    ("GET", "/", 200, 2),
    ("GET", "/api/items/", 200, 1),
    ("GET", "/api/items/5/", 200, 3),
    ("GET", "/api/items/500/", 404, 1),
    ("GET", "/api/archive/2024/", 200, 1),
    ("GET", "/api/private/", 403, 1),
    ("GET", "/api/boom/", 500, 2),
    ("GET", "/api/stream/", 200, 2),
    ("GET", "/api/async/", 200, 1),
    ("GET", "/missing/", 404, 1),
    ("GET", "/healthz", 200, 3),
]
DJANGO_EXPECTED = {
    ("GET", "/", "200"): 2,
    ("GET", "/api/items/", "200"): 1,
    ("GET", "/api/items/<int:pk>/", "200"): 3,
    ("GET", "/api/items/<int:pk>/", "404"): 1,
    ("GET", "/api/archive/(?P<year>[0-9]{4})/", "200"): 1,
    ("GET", "/api/private/", "403"): 1,
    ("GET", "/api/boom/", "500"): 2,
    ("GET", "/api/stream/", "200"): 2,
    ("GET", "/api/async/", "200"): 1,
    ("GET", "__unmatched__", "404"): 1,
}


@pytest.mark.parametrize("server", ["django-gunicorn", "django-uvicorn"], indirect=True)
def test_django_under_gunicorn_and_uvicorn(server: int) -> None:
    traffic(server, DJANGO_PLAN)
    samples, text = scrape_until(server, DJANGO_EXPECTED)
    assert requests_by_labels(samples) == DJANGO_EXPECTED
    assert exceptions_by_labels(samples) == {("GET", "/api/boom/", "RuntimeError"): 2}
    assert in_flight(samples) == 0
    check_metrics(text)

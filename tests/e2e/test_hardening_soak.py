"""Soak: mixed traffic with ~1% faults through a real uvicorn on 127.0.0.1, bounded in time
and count. At the end: the server's RSS is flat, nothing is in flight, and the request
total equals the requests sent.

Short form (CI): ``SOAK_SECONDS`` defaults to 20. Long form::

    SOAK_SECONDS=120 .venv/bin/python -m pytest tests/e2e/test_hardening_soak.py -s

Faults: ~1% of requests make the app raise (500), ~0.5% are sent by a client that hangs up
without reading the answer, and /metrics is scraped throughout, including in parallel.
The figures are printed (``-s``).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.paths import ROOT
from tests.support.scrape import series_of
from tests.support.servers import free_port

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
MAX_REQUESTS = int(os.environ.get("SOAK_MAX_REQUESTS", "2000000"))
CLIENTS = 6


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def server() -> Any:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc for the server's RSS")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTP_METRICS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.support.apps.soak:app",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
         "--log-level", "critical"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(base + "/metrics", timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError("uvicorn did not start") from None
            time.sleep(0.1)
    yield process, base, port
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _hang_up(port: int) -> None:
    """Send a whole request to the slow route and close without reading the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: soak\r\n\r\n")


def _totals(base: str) -> tuple[float, float]:
    text = httpx.get(base + "/metrics", timeout=10).text
    total = sum(series_of(text, "http_requests_total").values())
    in_flight = sum(series_of(text, "http_requests_in_flight").values())
    return total, in_flight


def test_soak_memory_flat_nothing_in_flight_totals_match(server: Any) -> None:
    process, base, port = server
    stop_at = time.monotonic() + SECONDS
    lock = threading.Lock()
    sent = {"requests": 0, "faults": 0, "hang_ups": 0, "scrapes": 0, "errors": 0}
    statuses: dict[int, int] = {}
    error_kinds: dict[str, str] = {}

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=10) as http:
            while time.monotonic() < stop_at:
                with lock:
                    if sent["requests"] >= MAX_REQUESTS:
                        return
                    sent["requests"] += 1
                roll = rng.random()
                try:
                    if roll < 0.01:
                        kind = "faults"
                        # uvicorn closes the connection after an app exception, even
                        # once the 500 was sent; without "close" the client would race it
                        # with its next request on the same connection.
                        status = http.get("/fail", headers={"Connection": "close"}).status_code
                    elif roll < 0.015:
                        kind = "hang_ups"
                        _hang_up(port)
                        status = 0
                    elif roll < 0.2:
                        kind = ""
                        status = http.post(f"/items/{rng.randint(0, 10**6)}",
                                           content=b"y" * rng.randint(0, 4096)).status_code
                    elif roll < 0.3:
                        kind = ""
                        status = http.get("/stream").status_code
                    elif roll < 0.35:
                        kind = ""
                        status = http.get(f"/no/such/{rng.random()}").status_code
                    elif roll < 0.37:
                        kind = ""
                        status = http.get("/slow").status_code
                    else:
                        kind = ""
                        status = http.get(rng.choice(["/", f"/items/{rng.random()}"])).status_code
                except httpx.HTTPError as exc:
                    with lock:
                        sent["errors"] += 1
                        error_kinds[f"{type(exc).__name__}: {exc}"[:80]] = kind
                    continue
                with lock:
                    if kind:
                        sent[kind] += 1
                    statuses[status] = statuses.get(status, 0) + 1

    scrape_statuses: list[int] = []

    def scraper() -> None:
        def one() -> None:
            status = httpx.get(base + "/metrics", timeout=10).status_code
            with lock:
                scrape_statuses.append(status)

        while time.monotonic() < stop_at:
            # Two at once now and then: the scrape limit and shared rendering at work.
            at_once = 2 if len(scrape_statuses) % 10 == 0 else 1
            pair = [threading.Thread(target=one) for _ in range(at_once)]
            for thread in pair:
                thread.start()
            for thread in pair:
                thread.join()
            sent["scrapes"] += len(pair)
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=scraper))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    # RSS after warm-up (a few seconds in: imports, caches, first series are done).
    time.sleep(min(3.0, SECONDS / 4))
    rss_warm = _rss_kib(process.pid)
    for thread in threads:
        thread.join(timeout=SECONDS + 60)
        assert not thread.is_alive()
    elapsed = time.monotonic() - started

    # Hung-up requests finish on the server after their clients left: wait for them.
    deadline = time.monotonic() + 15
    while True:
        total, in_flight = _totals(base)
        if (total == sent["requests"] - sent["errors"] and in_flight == 0) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rss_end = _rss_kib(process.pid)
    print(
        f"\nSOAK {elapsed:.0f}s: {sent['requests']} requests"
        f" ({sent['requests'] / elapsed:.0f}/s; {sent['faults']} app faults,"
        f" {sent['hang_ups']} hang-ups, {sent['errors']} client errors),"
        f" {sent['scrapes']} scrapes; counted {total:.0f}, in flight {in_flight:.0f};"
        f" RSS after warm-up {rss_warm} KiB, at end {rss_end} KiB"
        f" ({rss_end - rss_warm:+d} KiB); statuses {dict(sorted(statuses.items()))}"
    )
    assert sent["errors"] == 0, error_kinds
    assert set(scrape_statuses) <= {200, 503} and 200 in scrape_statuses
    assert in_flight == 0
    assert total == sent["requests"]
    assert statuses.get(500, 0) == sent["faults"]
    # Flat: no growth per request. The allowance covers allocator noise, not leaks (a leak
    # of even 100 bytes per request would be several MB here).
    assert rss_end - rss_warm < 8 * 1024

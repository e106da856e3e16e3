"""Does the single-process store grow with the connections a ``gunicorn -k gevent`` worker
has served? Each connection runs in a greenlet of its own. Serves
``tests/support/apps/flask_gevent.py`` (Flask + ``Metrics(app)``) on 127.0.0.1 with one
worker, opens connections one after the other (a new TCP connection each), and after each
checkpoint reports the store's shard count (``RequestStore.shard_count()``, through the
app's ``/shards``), the median time of a ``/metrics`` scrape (client side, 7 scrapes) and
the worker's RSS.

    .venv/bin/python benchmarks/gevent_shards.py [checkpoint ...]   # default: 1000 10000
"""

from __future__ import annotations

import http.client
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import BIN, Server  # noqa: E402

MAX_CONNECTIONS = 50_000  # bounded, whatever the command line says


def request(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def scrape_ms(port: int, times: int = 7) -> float:
    spent = []
    for _ in range(times):
        begin = time.perf_counter()
        status, _ = request(port, "/metrics")
        spent.append((time.perf_counter() - begin) * 1000)
        assert status == 200
    return statistics.median(spent)


def main(checkpoints: list[int]) -> None:
    # Not tests.support.servers.gunicorn(): its config is the multiprocess one.
    argv = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", "-w", "1", "-k", "gevent",
            "tests.support.apps.flask_gevent:app"]
    with Server(argv) as server:
        (worker,) = server.worker_pids()
        sent = 0
        print("connections  shards  scrape_ms  worker_rss_MiB")
        print(f"{sent:>11}  {request(server.port, '/shards')[1].decode():>6}  "
              f"{scrape_ms(server.port):>9.2f}  {rss_kib(worker) / 1024:>14.1f}")
        for checkpoint in checkpoints:
            while sent < min(checkpoint, MAX_CONNECTIONS):
                assert request(server.port, f"/hello/{sent % 10}")[0] == 200
                sent += 1
            shards = request(server.port, "/shards")[1].decode()
            print(f"{sent:>11}  {shards:>6}  {scrape_ms(server.port):>9.2f}  "
                  f"{rss_kib(worker) / 1024:>14.1f}")


if __name__ == "__main__":
    main([int(arg) for arg in sys.argv[1:]] or [1000, 10000])

"""End to end under ``gunicorn -k gevent``, where every connection runs in a greenlet of
its own: after thousands of connections the worker's store holds as many shards as it did
after the first one (not one per greenlet ever seen), and every request is counted once."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.promtool import check_metrics
from tests.support.scrape import in_flight, parse_samples, requests_by_labels
from tests.support.servers import BIN, Server, http_get

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

CONNECTIONS = 2000  # each a new TCP connection (Connection: close), so a new greenlet
CLIENTS = 4  # client threads, so that several greenlets are alive at once
SHARDS = 3  # the worker's main thread, and slack for a thread gevent may start


def shard_count(server: Server) -> int:
    status, body = http_get(f"{server.url}/shards")
    assert status == 200, body
    return int(body)


def test_store_stays_flat_over_thousands_of_greenlets() -> None:
    # Not tests.support.servers.gunicorn(): its config is the multiprocess one, and this is
    # the single-process store.
    argv = [str(BIN / "gunicorn"), "--bind", "127.0.0.1:{port}", "-w", "1", "-k", "gevent",
            "--timeout", "120", "tests.support.apps.flask_gevent:app"]
    with Server(argv) as server:
        assert shard_count(server) <= SHARDS
        sent = 0
        shards = []
        with ThreadPoolExecutor(CLIENTS) as pool:
            for _round in range(4):
                batch = CONNECTIONS // 4
                statuses = list(pool.map(
                    lambda i: http_get(f"{server.url}/hello/{i % 7}")[0], range(batch)
                ))
                assert statuses == [200] * batch
                sent += batch
                server.metrics()  # a scrape between rounds folds what ended greenlets left
                shards.append(shard_count(server))
        assert shards == [shards[0]] * len(shards) and shards[0] <= SHARDS, shards

        # Every request recorded once (the last ones are recorded when gunicorn closes
        # their bodies, maybe a moment after the client read them), on every scrape.
        expected = {
            ("GET", "/hello/<name>", "200"): float(sent),
            ("GET", "/shards", "200"): float(len(shards) + 1),
        }
        for _ in range(200):  # bounded: 200 * 50 ms at most
            samples = parse_samples(server.metrics())
            if requests_by_labels(samples) == expected:
                break
            time.sleep(0.05)
        for _ in range(3):
            text = server.metrics()
            samples = parse_samples(text)
            assert requests_by_labels(samples) == expected
            assert in_flight(samples) == 0
        check_metrics(text)
        assert shard_count(server) <= SHARDS

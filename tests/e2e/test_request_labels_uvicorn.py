"""Request-derived labels, in_flight_by_route, do_not_track and exclude_methods through a
real uvicorn (httptools and h11), with concurrent clients: exact totals per label value."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter

import pytest

from tests.support.scrape import IN_FLIGHT, REQUEST, parse_families, sample, samples
from tests.support.servers import Server, uvicorn

APP = "tests.support.apps.fastapi_labels:app"


def get(server: Server, path: str, headers: dict[str, str], method: str = "GET") -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_labels_are_exact_and_bounded_under_concurrent_clients(http: str) -> None:
    with Server(uvicorn(APP, "--http", http)) as server:
        expected: Counter[tuple[str, str, str, str, str]] = Counter()
        lock = threading.Lock()

        def client(worker: int) -> None:
            for index in range(40):
                item = worker * 100 + index
                tenant = ("acme", "globex", "")[index % 3]
                headers = {"X-Client": f"client{index % 8}"}
                if tenant:
                    headers["Authorization"] = f"Bearer {tenant}"
                path = f"/items/{item}" if index % 2 else f"/sync/{item}"
                assert get(server, path, headers) == 200
                route = "/items/{item_id}" if index % 2 else "/sync/{item_id}"
                cache = ("HIT" if item % 2 else "MISS") if index % 2 else "none"
                with lock:
                    expected[(route, tenant or "anonymous", f"client{index % 8}", cache)] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        get(server, "/health", {})
        get(server, "/items/1", {}, method="OPTIONS")
        deadline = time.monotonic() + 5
        while True:
            families = parse_families(server.metrics())
            found = samples(families, REQUEST)
            if sum(v for _, v in found) >= 160 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        got: Counter[tuple[str, str, str, str]] = Counter()
        for labels, value in found:
            assert labels["method"] == "GET" and labels["status"] == "200", labels
            series = (labels["route"], labels["tenant"], labels["client"], labels["cache"])
            got[series] += int(value)
        # X-Client is capped at 5 distinct values: the totals per (route, tenant, cache)
        # are exact, and which 5 clients kept their own value is first come, first kept.
        clients = {client for (_, _, client, _) in got}
        assert len(clients - {"__other__"}) == 5 and "__other__" in clients

        def without_client(counts: Counter[tuple[str, ...]]) -> Counter[tuple[str, ...]]:
            out: Counter[tuple[str, ...]] = Counter()
            for (route, tenant, _, cache), value in counts.items():
                out[(route, tenant, cache)] += value
            return out

        assert without_client(got) == without_client(expected)  # type: ignore[arg-type]
        assert sum(got.values()) == 160


def test_a_stuck_request_shows_under_its_route_while_stuck() -> None:
    with Server(uvicorn(APP, "--http", "h11")) as server:
        done: list[int] = []
        thread = threading.Thread(target=lambda: done.append(get(server, "/stuck", {})))
        thread.start()
        deadline = time.monotonic() + 10
        while True:
            families = parse_families(server.metrics())
            if sample(families, IN_FLIGHT, {"method": "GET", "route": "/stuck"}) == 1.0:
                break
            assert time.monotonic() < deadline, samples(families, IN_FLIGHT)
            time.sleep(0.05)
        assert get(server, "/release", {}, method="POST") == 200
        thread.join(30)
        assert done == [200]
        deadline = time.monotonic() + 5
        while sample(parse_families(server.metrics()), REQUEST, {
            "method": "GET", "route": "/stuck", "status": "200", "tenant": "anonymous",
            "client": "", "cache": "none",
        }) != 1.0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        families = parse_families(server.metrics())
        assert all(labels["route"] != "/stuck" for labels, _ in samples(families, IN_FLIGHT))

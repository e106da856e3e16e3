"""Request-derived labels (issue 13) through a real gunicorn on 127.0.0.1, serving
:mod:`tests.support.apps.flask_labels`: a header label bounded by ``max_label_values``, a
header label with ``allowed`` that a ``before_request`` hook overrides with ``set_label``,
several client threads at once, and the exact totals per label value read back from
``/metrics`` with prometheus_client's parser.

Three servers: one gthread worker and one gevent worker (threads or greenlets share the
bound; the in-flight gauge by route shows a request stuck in its view while it is stuck),
and two sync workers sharing a multiprocess directory (every tenant within
``max_label_values``: each worker keeps its own first values, so which values a worker
folds depends on which requests it was given)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.request_labels import by
from tests.support.scrape import Samples, parse_samples
from tests.support.servers import Server, gunicorn, http_get, require_server, scrape_until

APP = "tests.support.apps.flask_labels:app"
ITEM = "/items/<int:item_id>"
THREADS, PER_THREAD = 6, 40
OTHER = "__other__"


def get(server: Server, path: str, headers: dict[str, str]) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close", **headers})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def request_for(thread: int, index: int, tenants: int) -> tuple[str, dict[str, str], str, str]:
    """The request ``index`` of client ``thread``: (path, headers, tenant sent, plan label
    expected). Plans come from the header, the query (set_label, which wins) or neither."""
    tenant = f"t{(thread + index) % tenants}"
    headers = {"X-Tenant": tenant}
    path = f"/items/{index}"
    kind = (thread * PER_THREAD + index) % 6
    if kind == 0:
        headers["X-Plan"], plan = "free", "free"
    elif kind == 1:
        headers["X-Plan"], plan = "gold", OTHER  # not allowed
    elif kind == 2:
        path, plan = f"{path}?plan=pro", "pro"  # set_label
    elif kind == 3:
        headers["X-Plan"] = "free"
        path, plan = f"{path}?plan=enterprise", OTHER  # set_label wins, then the bound
    else:
        plan = "none"  # the default
    return path, headers, tenant, plan


def flood(server: Server, tenants: int, kept: set[str]) -> dict[tuple[str, str], int]:
    """THREADS clients at once; the expected count by (tenant label, plan label)."""
    expected: dict[tuple[str, str], int] = {}
    failures: list[BaseException] = []

    def client(thread: int) -> None:
        try:
            for index in range(PER_THREAD):
                path, headers, _, _ = request_for(thread, index, tenants)
                assert get(server, path, headers) == 200
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    for thread in range(THREADS):
        for index in range(PER_THREAD):
            _, _, tenant, plan = request_for(thread, index, tenants)
            key = (tenant if tenant in kept else OTHER, plan)
            expected[key] = expected.get(key, 0) + 1
    workers = [threading.Thread(target=client, args=(n,)) for n in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert not failures, failures
    return expected


def add(counts: dict[tuple[str, str], int], key: tuple[str, str], n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def assert_labelled(samples: Samples, expected: dict[tuple[str, str], int]) -> None:
    assert by(samples, "http_requests_total", "tenant", "plan") == expected
    assert by(samples, "http_request_duration_seconds_count", "tenant", "plan") == expected
    buckets = {
        (tenant, plan): value
        for (tenant, plan, le), value in
        by(samples, "http_request_duration_seconds_bucket", "tenant", "plan", "le").items()
        if le == "+Inf"
    }
    assert buckets == expected


WORKERS = {
    "gthread": (["-k", "gthread", "--threads", "8"], ("gunicorn",)),
    # Every connection in a greenlet of its own: set_label's values live in the greenlet.
    "gevent": (["-k", "gevent"], ("gunicorn", "gevent")),
}


@pytest.fixture(params=sorted(WORKERS))
def one_worker(request: pytest.FixtureRequest) -> Iterator[Server]:
    args, modules = WORKERS[request.param]
    require_server(modules, needs=["flask"])
    argv = gunicorn(APP, "-w", "1", *args, multiprocess=False)
    env = {"HTTP_METRICS_MAX_LABEL_VALUES": "3", "HTTP_METRICS_IN_FLIGHT_BY_ROUTE": "true"}
    with Server(argv, env=env) as server:
        yield server


def test_concurrent_labelled_requests_exact_per_value_and_a_stuck_request(
    one_worker: Server,
) -> None:
    server = one_worker
    # The first three tenants take the three places, in order; t3 and t4 fold later.
    expected: dict[tuple[str, str], int] = {}
    for tenant in ["t0", "t1", "t2"]:
        assert get(server, "/items/0", {"X-Tenant": tenant}) == 200
        add(expected, (tenant, "none"))
    for key, count in flood(server, tenants=5, kept={"t0", "t1", "t2"}).items():
        add(expected, key, count)

    # A request stuck in its view shows under its route while it is stuck.
    answers: list[int] = []
    stuck = threading.Thread(target=lambda: answers.append(get(server, "/stuck", {})))
    stuck.start()
    try:
        deadline = time.monotonic() + 10
        while http_get(f"{server.url}/entered")[1] != "yes":
            assert time.monotonic() < deadline, "the stuck request never arrived"
            time.sleep(0.02)
        samples = parse_samples(server.metrics())
        assert by(samples, "http_requests_in_flight", "method", "route") == {
            ("GET", "/stuck"): 1
        }
    finally:
        http_get(f"{server.url}/release")
        stuck.join(30)
    assert answers == [200]
    add(expected, ("", "none"))  # /stuck: no tenant, no plan

    total = THREADS * PER_THREAD + 3
    samples = scrape_until(server, {
        ("GET", ITEM, "200"): total, ("GET", "/stuck", "200"): 1,
    })
    assert_labelled(samples, expected)
    assert by(samples, "http_requests_total", "route", "tenant", "plan")[
        ("/stuck", "", "none")] == 1
    assert by(samples, "http_requests_in_flight", "method", "route") == {}
    # /entered and /release are do_not_track: never recorded.
    assert {labels["route"] for labels in
            (dict(pairs) for name, pairs in samples if name == "http_requests_total")} == {
        ITEM, "/stuck"}


def test_two_workers_sharing_a_multiprocess_directory(tmp_path: Path) -> None:
    require_server(["gunicorn"], needs=["flask"])
    directory = tmp_path / "multiproc"
    directory.mkdir()
    argv = gunicorn(APP, "-w", "2", "-k", "sync")
    env = {"HTTP_METRICS_MAX_LABEL_VALUES": "5"}
    with Server(argv, env=env, multiproc_dir=str(directory)) as server:
        expected = flood(server, tenants=5, kept={f"t{n}" for n in range(5)})
        for _ in range(10):  # do_not_track in the multiprocess store: in flight, then not
            assert http_get(f"{server.url}/entered")[0] == 200
        samples = scrape_until(server, {("GET", ITEM, "200"): THREADS * PER_THREAD})
        assert_labelled(samples, expected)
        assert OTHER not in {tenant for tenant, _ in expected}
        assert by(samples, "http_requests_in_flight", "method") == {("GET",): 0}

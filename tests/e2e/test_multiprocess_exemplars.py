"""Exemplars in multiprocess mode, end to end: a real ``gunicorn -w 3`` (sync workers) with
OpenTelemetry's WSGI middleware, scraped by the real Prometheus with exemplar storage.
Requests served by different workers (each answers its PID and trace ID) all show their
trace IDs in Prometheus' ``/api/v1/query_exemplars``; a worker killed with ``kill -9`` keeps
its exemplar in every scrape until a newer request replaces it; with native histograms on,
Prometheus reads the same exemplars from the protobuf exposition.

Bounded in time (every wait has a deadline, the traffic a count); everything started is
stopped."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from tests.support.apps.multiprocess_otel_wsgi import ROUTES
from tests.support.prometheus_server import PrometheusServer
from tests.support.servers import Server, gunicorn

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

BUCKETS = "http_request_duration_seconds_bucket"
COUNTER = "http_requests_total"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    argv = gunicorn("tests.support.apps.multiprocess_otel_wsgi:app", "-w", "3", "-k", "sync",
                    "--timeout", "60")
    with Server(argv, multiproc_dir=str(directory)) as running:
        running.directory = directory  # type: ignore[attr-defined]
        yield running


def traced_get(server: Server, path: str, trace_id: str) -> tuple[int, str]:
    """GET ``path`` on a fresh connection with a sampled ``traceparent``: (worker PID, the
    trace ID the app saw)."""
    request = urllib.request.Request(
        server.url + path,
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "Connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        pid, seen = response.read().decode().split()
    return int(pid), seen


def scrape_exemplars(server: Server) -> dict[tuple[str, str, str], str]:
    """(sample name, route, le or "") -> trace ID, from an OpenMetrics scrape."""
    request = urllib.request.Request(
        server.url + "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                key = (sample.name, sample.labels["route"], sample.labels.get("le", ""))
                found[key] = sample.exemplar.labels["trace_id"]
    return found


def prometheus_exemplars(prometheus: PrometheusServer, query: str) -> dict[str, set[str]]:
    """route -> the trace IDs Prometheus stored as exemplars of ``query``."""
    now = time.time()
    data = prometheus.api(
        "query_exemplars", {"query": query, "start": repr(now - 600), "end": repr(now + 5)}
    )
    found: dict[str, set[str]] = {}
    for series in data or []:
        route = series["seriesLabels"].get("route", "")
        for exemplar in series.get("exemplars", []):
            found.setdefault(route, set()).add(exemplar["labels"].get("trace_id", ""))
    return found


def spread_traffic(
    server: Server,
) -> tuple[dict[str, tuple[int, str]], dict[str, set[str]]]:
    """One request per route, each with its own trace ID, three at a time on fresh
    connections so gunicorn's workers share them (one after the other, the worker that just
    answered tends to accept the next); more rounds (bounded) until the latest requests of
    the routes were served by at least two workers. Returns route -> (pid, trace ID) of its
    latest request, and route -> every trace ID sent."""
    served: dict[str, tuple[int, str]] = {}  # route -> (pid, trace ID) of its latest request
    sent: dict[str, set[str]] = {}  # route -> every trace ID sent
    with ThreadPoolExecutor(3) as pool:
        for attempt in range(10):
            trace_ids = [f"{attempt + 1:02x}{n + 1:02x}" + "ab" * 14 for n in range(ROUTES)]
            answers = list(pool.map(lambda n: traced_get(server, f"/r/{n}", trace_ids[n]),  # noqa: B023
                                    range(ROUTES)))
            for n, (pid, seen) in enumerate(answers):
                assert seen == trace_ids[n]
                served[f"/r/{n}"] = (pid, trace_ids[n])
                sent.setdefault(f"/r/{n}", set()).add(trace_ids[n])
            if len({pid for pid, _ in served.values()}) >= 2:
                break
    return served, sent


def test_prometheus_stores_exemplars_from_every_worker_and_a_killed_ones_stay(
    server: Server,
) -> None:
    served, sent = spread_traffic(server)
    pids = {pid for pid, _ in served.values()}
    assert len(pids) >= 2, served

    expected = {route: trace_id for route, (_, trace_id) in served.items()}
    with PrometheusServer(
        [f"127.0.0.1:{server.port}"], scrape_interval="1s",
        extra_flags=["--enable-feature=exemplar-storage"],
    ) as prometheus:
        def stored(query: str) -> bool:
            found = prometheus_exemplars(prometheus, query)
            return all(trace_id in found.get(route, set())
                       for route, trace_id in expected.items())

        prometheus.wait_for(lambda: stored(BUCKETS), timeout=30, message="bucket exemplars")
        prometheus.wait_for(lambda: stored(COUNTER), timeout=30, message="counter exemplars")

    # Each route's counter shows the trace ID of its latest request, whichever worker served
    # it; its buckets show that one and, on other buckets, only its earlier ones.
    def by_route(found: dict[tuple[str, str, str], str], name: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for (sample, route, _), trace_id in found.items():
            if sample == name:
                out.setdefault(route, []).append(trace_id)
        return out

    before = scrape_exemplars(server)
    assert by_route(before, COUNTER) == {route: [t] for route, t in expected.items()}
    buckets = by_route(before, BUCKETS)
    assert sorted(buckets) == sorted(expected)
    for route, trace_id in expected.items():
        assert trace_id in buckets[route]
        assert set(buckets[route]) <= sent[route]
        assert len(buckets[route]) == len(set(buckets[route]))

    # kill -9 a worker that served some routes: its exemplars stay, in every scrape (the
    # scrape that finds it dead moves its file into the archive), until replaced.
    victim = next(pid for pid, _ in served.values())
    victim_routes = sorted(route for route, (pid, _) in served.items() if pid == victim)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while victim in server.worker_pids() or len(server.worker_pids()) < 3:
        assert time.monotonic() < deadline, "gunicorn did not replace the killed worker"
        time.sleep(0.1)
    directory: Path = server.directory  # type: ignore[attr-defined]
    for _ in range(3):  # any worker answers: all of them show the dead one's exemplars
        assert scrape_exemplars(server) == before
    assert not (directory / f"asgi_metrics.exemplars_{victim}.bin").exists()
    assert (directory / "asgi_metrics.exemplars_archive.bin").exists()

    # A newer request replaces the dead worker's exemplar of that series (and only it).
    route = victim_routes[0]
    newer = "ff" * 16
    traced_get(server, route, newer)
    after = scrape_exemplars(server)
    assert by_route(after, COUNTER)[route] == [newer]
    assert newer in by_route(after, BUCKETS)[route]
    for other, trace_id in expected.items():
        if other != route:
            assert by_route(after, COUNTER)[other] == [trace_id]


def test_prometheus_reads_them_from_the_protobuf_exposition_too(server: Server) -> None:
    # With native histograms on, Prometheus asks for protobuf first: the exemplars come
    # through that encoder (the classic buckets' and the counter's).
    served, _ = spread_traffic(server)
    assert len({pid for pid, _ in served.values()}) >= 2, served
    expected = {route: trace_id for route, (_, trace_id) in served.items()}
    with PrometheusServer(
        [f"127.0.0.1:{server.port}"], scrape_interval="1s",
        extra_flags=["--enable-feature=exemplar-storage,native-histograms"],
    ) as prometheus:
        def stored(query: str) -> bool:
            found = prometheus_exemplars(prometheus, query)
            return all(trace_id in found.get(route, set())
                       for route, trace_id in expected.items())

        prometheus.wait_for(lambda: stored(BUCKETS), timeout=30, message="bucket exemplars")
        prometheus.wait_for(lambda: stored(COUNTER), timeout=30, message="counter exemplars")

"""Parity (issue 16): the single-process feature set again under real multi-worker servers
with a multiprocess directory, ``gunicorn -w 3`` (gthread workers, a Flask app) and
``uvicorn --workers 2`` (a FastAPI app), on loopback.

The apps (:mod:`tests.support.apps.flask_parity`, :mod:`tests.support.apps.fastapi_parity`)
turn on everything at once: a header label with an allowed list that ``set_label``
overrides, a capped header label, ``in_flight_by_route``, ``do_not_track`` routes,
``exclude_methods``, ``count_unmatched=False`` and native histograms. The test sends every
request itself and counts what each series must show; once the last request has landed,
every scrape (whichever worker answers it) must show exactly that, sample by sample
(prometheus_client's parser; the protobuf scrape through the independent decoder of
:mod:`tests.support.protobuf`). Then a worker killed with SIGKILL mid-request, and
``--max-requests`` recycling many workers.

``max_label_values`` holds per worker (documented): the capped label gets fewer distinct
values than the cap, so every worker keeps all of them and the totals are exact; one test
sends more and checks what holds whichever worker kept which.

Bounded: at most a few hundred requests per server, every wait with a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.apps.parity_common import PLAN_CAP, TENANTS
from tests.support.protobuf import by_name, classic_samples, labels_of, native_buckets
from tests.support.request_labels import by
from tests.support.scrape import Samples, parse_samples
from tests.support.servers import Server, gunicorn, require_server, uvicorn

pytestmark = pytest.mark.skipif(not os.path.exists("/proc"), reason="needs Linux /proc")

OTHER = "__other__"
PROTOBUF = ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;"
            " encoding=delimited")
#: (method, route, status, tenant, plan) -> requests.
Key = tuple[str, str, str, str, str]
LABELS = ("method", "route", "status", "tenant", "plan")


@dataclasses.dataclass(frozen=True)
class Flavor:
    """One server under test: its command line and the route templates its app shows."""

    argv: list[str]
    workers: int
    item: str
    stuck: str
    modules: tuple[str, ...]
    needs: tuple[str, ...]


SERVERS = {
    # Threads enough that stuck requests never hold every thread of a worker: the scrapes
    # it accepts would queue behind them.
    "gunicorn-gthread-3": Flavor(
        gunicorn("tests.support.apps.flask_parity:app", "-w", "3", "-k", "gthread",
                 "--threads", "8", "--timeout", "120"),
        3, "/items/<int:item_id>", "/stuck/<int:n>", ("gunicorn",), ("flask",),
    ),
    "uvicorn-workers-2": Flavor(
        uvicorn("tests.support.apps.fastapi_parity:app", "--workers", "2"),
        2, "/items/{item_id}", "/stuck/{n}", ("uvicorn",), ("fastapi",),
    ),
}


@dataclasses.dataclass
class Running:
    """A started server and the files its app watches; ``scrapes`` counts the scrapes of
    ``/metrics`` answered so far (the start-up probe is the first)."""

    server: Server
    flavor: Flavor
    directory: Path
    release: Path
    hang_pid_file: Path
    scrapes: int = 1

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"


@contextlib.contextmanager
def serve(flavor: Flavor, tmp_path: Path, argv: list[str] | None = None) -> Iterator[Running]:
    require_server(flavor.modules, needs=flavor.needs)
    directory = tmp_path / "multiproc"
    directory.mkdir()
    release, hang = tmp_path / "release", tmp_path / "hang.pid"
    env = {"STUCK_RELEASE": str(release), "HANG_PID_FILE": str(hang)}
    with Server(argv or flavor.argv, env=env, multiproc_dir=str(directory)) as server:
        yield Running(server, flavor, directory, release, hang)


@pytest.fixture(params=sorted(SERVERS))
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    with serve(SERVERS[request.param], tmp_path) as started:
        yield started


# --- requests -----------------------------------------------------------------------------


def call(run: Running, method: str, path: str, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    """``method path`` on a fresh connection (so the kernel spreads them over workers)."""
    connection = http.client.HTTPConnection("127.0.0.1", run.server.port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def labelled_request(
    flavor: Flavor, index: int
) -> tuple[str, dict[str, str], Key, bool]:
    """Request ``index`` of the labelled traffic: (path, headers, the series it must be
    counted in, whether its tenant was folded into ``__other__``)."""
    headers: dict[str, str] = {}
    tenant_header = [*TENANTS, "umbrella", None][index % 5]  # umbrella: not allowed
    plan_header = ["free", "pro", "team", None][index % 4]  # within max_label_values
    query = ""
    if index % 7 == 3:  # set_label wins over the (allowed) header
        tenant_header, query, tenant = "acme", "?tenant=initech", "initech"
    elif index % 11 == 5:  # set_label with a value outside the allowed list
        tenant_header, query, tenant = "globex", "?tenant=evil", OTHER
    else:
        tenant = "none" if tenant_header is None else (
            tenant_header if tenant_header in TENANTS else OTHER)
    if tenant_header is not None:
        headers["X-Tenant"] = tenant_header
    if plan_header is not None:
        headers["X-Plan"] = plan_header
    status = "500" if index % 13 == 0 else "200"
    key = ("GET", flavor.item, status, tenant, plan_header or "")
    return f"/items/{index}{query}", headers, key, tenant == OTHER


def uncounted_request(index: int) -> tuple[str, str]:
    """A request the middleware serves but never counts: an excluded method, a
    ``do_not_track`` route, or one no route claimed (``count_unmatched=False``)."""
    return [("HEAD", "/items/1"), ("OPTIONS", "/items/1"), ("GET", "/health"),
            ("GET", f"/nope/{index}")][index % 4]


@dataclasses.dataclass
class Expected:
    """What the test sent: counts by series and the tenant values folded."""

    counts: dict[Key, int] = dataclasses.field(default_factory=dict)
    folded: int = 0

    def add(self, key: Key, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def as_floats(self) -> dict[tuple[str, ...], float]:
        return {key: float(count) for key, count in self.counts.items()}


def send(run: Running, expected: Expected, indices: range, clients: int = 4) -> None:
    """The labelled requests ``indices`` from ``clients`` threads at once, with an uncounted
    request after every third; ``expected`` is updated with what must be counted."""
    def one(index: int) -> None:
        path, headers, _, _ = labelled_request(run.flavor, index)
        status, body = call(run, "GET", path, headers)
        assert status == (500 if index % 13 == 0 else 200), (path, status, body)
        if index % 3 == 0:
            method, other = uncounted_request(index // 3)
            status, body = call(run, method, other)
            assert status in (200, 404), (method, other, status, body)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, indices))
    for index in indices:
        _, _, key, folded = labelled_request(run.flavor, index)
        expected.add(key)
        expected.folded += folded


# --- scrapes ------------------------------------------------------------------------------


def scrape(run: Running) -> Samples:
    status, body = call(run, "GET", "/metrics")
    assert status == 200, body
    run.scrapes += 1
    return parse_samples(body.decode())


def scrape_protobuf(run: Running) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", run.server.port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"Accept": PROTOBUF,
                                                       "Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        assert "protobuf" in (response.getheader("Content-Type") or "")
    finally:
        connection.close()
    run.scrapes += 1
    return by_name(body)


def requests_of(samples: Samples) -> dict[tuple[str, ...], float]:
    return by(samples, "http_requests_total", *LABELS)


def in_flight_of(samples: Samples) -> dict[tuple[str, ...], float]:
    """The in-flight gauge by (method, route), series at 0 left out."""
    return {key: value for key, value in
            by(samples, "http_requests_in_flight", "method", "route").items() if value}


def assert_exact(samples: Samples, expected: Expected) -> None:
    """The request counter, the histogram's ``_count`` and ``+Inf`` bucket are exactly what
    was sent, series by series, and nothing is in flight."""
    want = expected.as_floats()
    assert requests_of(samples) == want
    assert by(samples, "http_request_duration_seconds_count", *LABELS) == want
    inf = {key[:-1]: value for key, value in
           by(samples, "http_request_duration_seconds_bucket", *LABELS, "le").items()
           if key[-1] == "+Inf"}
    assert inf == want
    assert in_flight_of(samples) == {}


def settle(run: Running, expected: Expected, scrapes: int = 8) -> Samples:
    """Wait (bounded) for the last request to land, then check that each of ``scrapes``
    scrapes, answered by whichever worker, shows exactly ``expected``.

    A response is recorded a moment after the client has read it, and each worker
    publishes its in-flight gauge by route every 0.5 s (docs/semantics.md): the wait is
    for both."""
    want = expected.as_floats()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        samples = scrape(run)
        if requests_of(samples) == want and in_flight_of(samples) == {}:
            break
        time.sleep(0.05)
    for _ in range(scrapes):
        samples = scrape(run)
        assert_exact(samples, expected)
    return samples


class Watcher:
    """Scrapes while traffic runs: no series ever goes down, none exceeds what will have
    been sent by the end, and no series appears that the traffic cannot make."""

    def __init__(self, run: Running, final: Expected) -> None:
        self.run, self.final = run, final.as_floats()
        self.problems: list[str] = []
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        last: dict[tuple[str, ...], float] = {}
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                now = requests_of(scrape(self.run))
            except BaseException as exc:  # reported by the test's thread
                self.problems.append(repr(exc))
                return
            self.seen += 1
            for key, value in now.items():
                if key not in self.final or value > self.final[key]:
                    self.problems.append(f"{key}: {value}, at most {self.final.get(key)}")
                if value < last.get(key, 0.0):
                    self.problems.append(f"{key} went down: {last[key]} -> {value}")
            if any(key not in now for key in last):
                self.problems.append(f"a series disappeared: {set(last) - set(now)}")
            last = now
            time.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self.problems, self.problems[:10]


def expected_for(flavor: Flavor, indices: range, base: Expected | None = None) -> Expected:
    """What ``indices`` of the labelled traffic add to ``base`` (without sending them)."""
    out = Expected(dict(base.counts) if base else {}, base.folded if base else 0)
    for index in indices:
        _, _, key, folded = labelled_request(flavor, index)
        out.add(key)
        out.folded += folded
    return out


def wait_for_in_flight(run: Running, want: dict[tuple[str, ...], float],
                       timeout: float = 15.0) -> Samples:
    """Scrape until the in-flight gauge by route is ``want`` (each worker publishes its own
    every 0.5 s), or the deadline."""
    deadline = time.monotonic() + timeout
    while in_flight_of(samples := scrape(run)) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    return samples


# --- the tests ----------------------------------------------------------------------------


def test_labels_and_per_route_choices_exact_on_every_scrape(running: Running) -> None:
    """Labels from an allowed-list header, a capped header and ``set_label``, ``__other__``
    folding; excluded methods, ``do_not_track`` and unmatched requests never counted. Two
    batches, scraped while they run (never down, never beyond) and after (exact)."""
    run = running
    expected = Expected()
    first, second = range(0, 120), range(120, 200)
    with Watcher(run, expected_for(run.flavor, first)) as watcher:
        send(run, expected, first)
    assert watcher.seen >= 1
    samples = settle(run, expected)
    # Every kind of value is there: allowed, set_label's, folded, defaults, capped ones.
    tenants = {key[3] for key in requests_of(samples)}
    assert tenants == {*TENANTS, OTHER, "none"}
    assert {key[4] for key in requests_of(samples)} == {"free", "pro", "team", ""}
    assert {key[2] for key in requests_of(samples)} == {"200", "500"}
    with Watcher(run, expected_for(run.flavor, second, expected)):
        send(run, expected, second)
    settle(run, expected)
    assert sum(expected.counts.values()) == 200


def test_capped_label_folds_per_worker_totals_exact(running: Running) -> None:
    """More distinct values than ``max_label_values`` (documented: the cap holds per
    worker): each value sent once is either kept (counted once) or folded, every worker
    keeps at most the cap, at least one worker kept a full cap, and nothing is lost."""
    run = running
    sent = 40
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(
            lambda n: call(run, "GET", "/items/1", {"X-Tenant": "acme", "X-Plan": f"p{n}"})[0],
            range(sent),
        ))
    assert statuses == [200] * sent
    deadline = time.monotonic() + 5
    while sum(requests_of(samples := scrape(run)).values()) != sent:
        assert time.monotonic() < deadline, requests_of(samples)
        time.sleep(0.05)
    kept: dict[str, float] = {}
    for _ in range(8):  # answered by different workers
        plans = {key[4]: value for key, value in requests_of(scrape(run)).items()
                 if key[:4] == ("GET", run.flavor.item, "200", "acme")}
        assert sum(plans.values()) == sent
        folded = plans.pop(OTHER, 0.0)
        assert set(plans) <= {f"p{n}" for n in range(sent)} and set(plans.values()) == {1.0}
        # Some worker served at least sent / workers >= PLAN_CAP requests.
        assert PLAN_CAP <= len(plans) <= run.flavor.workers * PLAN_CAP, plans
        assert folded == sent - len(plans)
        assert kept in ({}, plans)  # the same on every scrape
        kept = plans


def test_in_flight_by_route_while_requests_are_stuck(running: Running) -> None:
    """Requests stuck in a view of any worker show under their route in every scrape while
    they are stuck; ``do_not_track`` ones never do; counts stay exact meanwhile."""
    run = running
    expected = Expected()
    send(run, expected, range(30))
    settle(run, expected, scrapes=2)
    answers: list[int] = []

    def stuck(path: str) -> None:
        answers.append(call(run, "GET", path, timeout=30)[0])

    clients = [threading.Thread(target=stuck, args=(f"/stuck/{n}",)) for n in range(4)]
    clients += [threading.Thread(target=stuck, args=(f"/untracked/{n}",)) for n in range(2)]
    for client in clients:
        client.start()
    try:
        stuck_key = ("GET", run.flavor.stuck)
        wait_for_in_flight(run, {stuck_key: 4.0})
        for _ in range(6):  # answered by different workers
            samples = scrape(run)
            assert in_flight_of(samples) == {stuck_key: 4.0}
            assert requests_of(samples) == expected.as_floats()
        # Traffic meanwhile is counted exactly, the stuck requests still shown.
        send(run, expected, range(30, 60))
        deadline = time.monotonic() + 5
        while (requests_of(samples := scrape(run)) != expected.as_floats()
               or in_flight_of(samples) != {stuck_key: 4.0}):
            assert time.monotonic() < deadline, (requests_of(samples), in_flight_of(samples))
            time.sleep(0.05)
        for _ in range(4):
            samples = scrape(run)
            assert requests_of(samples) == expected.as_floats()
            assert in_flight_of(samples) == {stuck_key: 4.0}
    finally:
        run.release.touch()
        for client in clients:
            client.join(30)
    assert sorted(answers) == [200] * 6
    expected.add(("GET", run.flavor.stuck, "200", "none", ""), 4)
    samples = settle(run, expected)
    assert "/untracked/{n}" not in {key[1] for key in requests_of(samples)}


def test_native_histograms_count_every_request_per_series(running: Running) -> None:
    """A protobuf scrape: each duration series carries its native buckets, whose count is
    its classic count and the request counter's, exactly what was sent; the classic
    samples are the text scrape's."""
    run = running
    expected = Expected()
    send(run, expected, range(150))
    text = settle(run, expected, scrapes=2)
    for _ in range(3):  # answered by different workers
        families = scrape_protobuf(run)
        durations = families["http_request_duration_seconds"]
        natives: dict[tuple[str, ...], float] = {}
        for metric in durations.metric:
            labels = labels_of(metric)
            histogram = metric.histogram
            buckets = native_buckets(histogram)
            assert buckets, labels  # native buckets present, not only classic ones
            assert histogram.zero_threshold > 0
            key = tuple(labels[name] for name in LABELS)
            natives[key] = float(histogram.zero_count + sum(buckets.values()))
            assert natives[key] == histogram.sample_count, labels
        assert natives == expected.as_floats()
        counters = {tuple(labels_of(metric)[name] for name in LABELS): metric.counter.value
                    for metric in families["http_requests_total"].metric}
        assert counters == expected.as_floats()
        ours = [families[name] for name in ("http_requests_total",
                                            "http_request_duration_seconds")]
        from_text = sorted(
            (name, tuple(sorted(labels)), value) for (name, labels), value in text.items()
            if name.startswith(("http_requests_total", "http_request_duration_seconds"))
            and not name.endswith("_created")
        )
        assert classic_samples(ours) == from_text


def test_kill_9_mid_request_leaves_in_flight_and_keeps_counts(running: Running) -> None:
    """A worker killed with SIGKILL while a request is stuck in it: the request leaves the
    in-flight gauge, the worker's earlier counts stay, the server goes on counting."""
    run = running
    expected = Expected()
    send(run, expected, range(60))
    before = settle(run, expected, scrapes=3)
    hung: list[BaseException] = []

    def hang() -> None:
        try:
            call(run, "GET", "/hang", timeout=60)
        except OSError as exc:  # the connection dies with its worker
            hung.append(exc)

    client = threading.Thread(target=hang, daemon=True)
    client.start()
    deadline = time.monotonic() + 10
    while not (run.hang_pid_file.exists() and run.hang_pid_file.read_text()):
        assert time.monotonic() < deadline, "the /hang request never started"
        time.sleep(0.05)
    victim = int(run.hang_pid_file.read_text())
    assert victim in run.server.worker_pids()
    samples = wait_for_in_flight(run, {("GET", "/hang"): 1.0})
    assert in_flight_of(samples) == {("GET", "/hang"): 1.0}
    os.kill(victim, signal.SIGKILL)
    client.join(30)
    assert hung, "the /hang request was answered"
    samples = wait_for_in_flight(run, {})
    assert in_flight_of(samples) == {}, "the killed worker's request is still in flight"
    after = settle(run, expected)
    # The dead worker's share, bucket by bucket, is still there.
    for name in ("http_request_duration_seconds_bucket", "http_request_duration_seconds_count"):
        assert {k: v for k, v in after.items() if k[0] == name} == {
            k: v for k, v in before.items() if k[0] == name}
    assert "/hang" not in {key[1] for key in requests_of(after)}
    # The server (a replacement worker, or the others) keeps counting from there.
    send(run, expected, range(60, 120))
    settle(run, expected)


def files_in(directory: Path, native: bool) -> list[str]:
    """The directory's native files (``asgi_metrics.native_*``), or every other file."""
    return sorted(path.name for path in directory.iterdir()
                  if path.name.startswith("asgi_metrics.native_") == native)


def natives_of(families: dict[str, Any]) -> dict[tuple[str, ...], float]:
    """The native count (zero bucket and positive buckets) of each duration series."""
    return {
        tuple(labels_of(metric)[name] for name in LABELS):
            float(metric.histogram.zero_count + sum(native_buckets(metric.histogram).values()))
        for metric in families["http_request_duration_seconds"].metric
    }


#: Recycling: 3 workers, a new one after every 5 requests.
WORKERS, MAX_REQUESTS, ROUNDS, PER_ROUND = 3, 5, 6, 25
#: Native files once compacted: one per live worker, the archive, and those of a worker
#: that retired after the last scrape and of its replacement (the scrapes are requests
#: too, so a worker can retire on one).
NATIVE_FILES = WORKERS + 3


@contextlib.contextmanager
def recycling(worker: str, tmp_path: Path) -> Iterator[Running]:
    argv = gunicorn("tests.support.apps.flask_parity:app", "-w", str(WORKERS), "-k", worker,
                    "--threads", "4", "--max-requests", str(MAX_REQUESTS), "--timeout", "120")
    with serve(SERVERS["gunicorn-gthread-3"], tmp_path, argv) as run:
        yield run


def recycle_rounds(run: Running, expected: Expected) -> list[tuple[int, int]]:
    """ROUNDS rounds of labelled traffic, each checked exact by text scrapes; the number
    of (native, other) files in the directory after each round."""
    sizes = []
    for round_ in range(ROUNDS):
        # One client at a time: a worker that retires closes connections it has accepted
        # but not served, and the test must know what was served.
        send(run, expected, range(round_ * PER_ROUND, (round_ + 1) * PER_ROUND), clients=1)
        settle(run, expected, scrapes=3)
        sizes.append((len(files_in(run.directory, native=True)),
                      len(files_in(run.directory, native=False))))
    booted = run.server.output().count("Booting worker with pid")
    # At least a retirement per MAX_REQUESTS labelled requests, less the last ones.
    assert booted >= WORKERS + ROUNDS * PER_ROUND // MAX_REQUESTS // 2, (
        f"workers were not recycled: {booted} booted")
    return sizes


@pytest.mark.parametrize("worker", ["gthread", "sync"])
def test_max_requests_recycling_keeps_totals_exact_and_series_bounded(
    worker: str, tmp_path: Path
) -> None:
    """``--max-requests 5`` with 3 workers: dozens of recycles, totals exact after each
    round (native counts too), the same series whatever the number of workers that ran,
    and a directory that does not grow with them once a protobuf scrape compacted it."""
    with recycling(worker, tmp_path) as run:
        expected = Expected()
        sizes = recycle_rounds(run, expected)
        # The series are the label sets sent, not one set per worker.
        assert set(requests_of(scrape(run))) == set(expected.counts)
        # Classic files: a few per live worker plus the archives, not per worker that ran.
        others = files_in(run.directory, native=False)
        assert max(size for _, size in sizes) <= 4 * (WORKERS + 1) + 4, (sizes, others)
        for _ in range(3):
            assert natives_of(scrape_protobuf(run)) == expected.as_floats()
        # The protobuf scrapes compacted the dead workers' native files into the archive.
        natives = files_in(run.directory, native=True)
        assert len(natives) <= NATIVE_FILES, natives


def test_native_files_of_recycled_workers_compacted_by_text_scrapes(tmp_path: Path) -> None:
    """A server with native histograms on, scraped in text only (a Prometheus without the
    native feature): the directory still holds a bounded number of native files."""
    with recycling("sync", tmp_path) as run:
        sizes = recycle_rounds(run, Expected())
        natives = files_in(run.directory, native=True)
        assert max(size for size, _ in sizes) <= NATIVE_FILES, (sizes, natives)
        assert len(natives) <= NATIVE_FILES, natives


def test_self_metrics_count_every_worker(running: Running) -> None:
    """``http_metrics_label_values_folded_total`` and ``http_metrics_scrapes_total``
    summed over the workers: every tenant folded into ``__other__`` (an allowed list, so
    the same in every worker) and every scrape answered, whichever worker did."""
    run = running
    expected = Expected()
    send(run, expected, range(90))
    settle(run, expected, scrapes=2)
    assert expected.folded > 10
    for _ in range(4):
        samples = scrape(run)
        assert by(samples, "http_metrics_label_values_folded_total", "label") == {
            ("tenant",): float(expected.folded)}
        # The scrape counts itself: it is answered before it is rendered.
        assert by(samples, "http_metrics_scrapes_total", "result")[("answered",)] == run.scrapes
        assert sum(by(samples, "http_metrics_recording_failures_total", "stage").values()) == 0

"""Scrape time in multiprocess mode with many dead workers' files.

For 1, 10, 100 and 1000 dead workers (each leaving a counter and a histogram file with
``SERIES`` request series, like a recycled gunicorn worker), measures:

* prometheus_client's own ``MultiProcessCollector`` + ``generate_latest`` (no compaction:
  every dead worker's files are read at every scrape);
* our scrape (collect + the same text rendering): the first one after the workers died
  (it compacts them into the archive) and the following ones (one archive, not N files).

Then, with process metrics (``process_*`` of every live worker, read from ``/proc``): 4 live
worker processes and 1,000 recycled ones (their files, and the final CPU time gunicorn's
``child_exit`` noted for each), our scrape beside prometheus_client's
``MultiProcessCollector`` plus its ``ProcessCollector`` (the scraping process only) on the
same directory, in interleaved rounds.

Then, with exemplars: the same 1,000 recycles, each dead worker also leaving an exemplar file
with an exemplar in every bucket of its series (the worst case), 4 live workers with theirs;
our scrape (process metrics and exemplars, OpenMetrics) beside ``MultiProcessCollector`` +
``ProcessCollector`` on a copy of the same directory, interleaved. And the cost per request
of writing an exemplar in multiprocess mode: ``MultiprocessStore.observe`` with and without
one, in a child Python whose prometheus_client runs in multiprocess mode.

Run: ``python benchmarks/multiprocess_scrape.py`` (``--exemplars`` for the exemplar rows only).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from asgi_metrics.core.settings import DEFAULT_BUCKETS
from asgi_metrics.multiprocess.directory import collect_directory, fold_dead_workers
from asgi_metrics.multiprocess.exemplar_files import exemplar_file_name, write_file
from asgi_metrics.multiprocess.process_metrics import EXIT_PREFIX

SERIES = 20  # (method, route, status) combinations per worker
LABELS = ["method", "route", "status"]


def dead_pids(count: int) -> list[int]:
    procs = [subprocess.Popen(["true"]) for _ in range(count)]
    for proc in procs:
        proc.wait()
    return [proc.pid for proc in procs]


def write_worker(directory: str, pid: int) -> None:
    les = [str(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    hist = MmapedDict(os.path.join(directory, f"histogram_{pid}.db"))
    counter = MmapedDict(os.path.join(directory, f"counter_{pid}.db"))
    for index in range(SERIES):
        values = ["GET", f"/route/{index}", "200"]
        hist.write_value(mmap_key("http_request_duration_seconds",
                                  "http_request_duration_seconds_sum", LABELS, values, "h"),
                         1.5, 0.0)
        for le in les:
            hist.write_value(mmap_key("http_request_duration_seconds",
                                      "http_request_duration_seconds_bucket",
                                      [*LABELS, "le"], [*values, le], "h"), 1.0, 0.0)
        counter.write_value(mmap_key("http_request_exceptions",
                                     "http_request_exceptions_total", LABELS, values, "h"),
                            1.0, 0.0)
    hist.close()
    counter.close()


class _Metrics:
    def __init__(self, directory: str, process_metrics: bool = False) -> None:
        self.directory = directory
        self.process_metrics = process_metrics

    def collect(self) -> object:
        return collect_directory(self.directory, self.process_metrics)


def timed(function: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    print(f"{SERIES} series/worker, {len(DEFAULT_BUCKETS) + 1} buckets; times in ms (median)")
    print(f"{'dead workers':>12} {'prometheus_client':>18} {'ours, 1st (compacts)':>21}"
          f" {'ours, next':>11} {'files after':>12}")
    for count in (1, 10, 100, 1000):
        directory = tempfile.mkdtemp(prefix="mp-bench-")
        try:
            for pid in dead_pids(count):
                write_worker(directory, pid)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            repeat = 3 if count >= 1000 else 10
            upstream = timed(lambda: generate_latest(registry), repeat)  # noqa: B023
            ours_view = _Metrics(directory)
            start = time.perf_counter()
            generate_latest(ours_view)  # type: ignore[arg-type]
            first = (time.perf_counter() - start) * 1000
            ours = timed(lambda: generate_latest(ours_view), 10)  # type: ignore[arg-type]  # noqa: B023
            files = len([n for n in os.listdir(directory) if n.endswith(".db")])
            print(f"{count:>12} {upstream:>18.1f} {first:>21.1f} {ours:>11.1f} {files:>12}")
        finally:
            shutil.rmtree(directory)


def with_process_metrics(dead: int = 1000, live: int = 4, rounds: int = 7) -> None:
    """The scrape with process metrics after ``dead`` recycles, ``live`` workers alive:
    three copies of one directory, for prometheus_client, ours and ours without process
    metrics (ours compacts its copy at its first scrape; prometheus_client never does)."""
    base = tempfile.mkdtemp(prefix="mp-bench-proc-")
    workers = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE) for _ in range(live)]
    try:
        original = os.path.join(base, "original")
        os.mkdir(original)
        for proc in workers:
            write_worker(original, proc.pid)
        for pid in dead_pids(dead):
            write_worker(original, pid)
            with open(os.path.join(original, f"{EXIT_PREFIX}{pid}.json"), "w") as file:
                json.dump({"pid": pid, "cpu": 0.5}, file)
        copies = {}
        for name in ("upstream", "ours", "without"):
            copies[name] = os.path.join(base, name)
            shutil.copytree(original, copies[name])
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=copies["upstream"])
        ProcessCollector(registry=registry)
        views = {"upstream": registry, "ours": _Metrics(copies["ours"], True),
                 "without": _Metrics(copies["without"], False)}
        first = {}
        for name in ("ours", "without"):
            start = time.perf_counter()
            generate_latest(views[name])  # type: ignore[arg-type]
            first[name] = (time.perf_counter() - start) * 1000
        times: dict[str, list[float]] = {name: [] for name in views}
        for _ in range(rounds):  # interleaved: drift hits every variant alike
            for name, view in views.items():
                start = time.perf_counter()
                generate_latest(view)  # type: ignore[arg-type]
                times[name].append((time.perf_counter() - start) * 1000)
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"\nwith process metrics: {live} live workers, {dead} recycled; ms (median of"
              f" {rounds} interleaved rounds)")
        print(f"  prometheus_client MultiProcessCollector + ProcessCollector:"
              f" {med['upstream']:.1f} (every dead worker's files; the scraping process only)")
        print(f"  ours, 1st scrape (compacts): {first['ours']:.1f} with process metrics (folds"
              f" {dead} exit notes), {first['without']:.1f} without")
        print(f"  ours, next scrapes: {med['ours']:.1f} with process metrics,"
              f" {med['without']:.1f} without ({med['upstream'] / med['ours']:.0f}x faster than"
              " prometheus_client)")
    finally:
        for proc in workers:
            proc.kill()
            proc.wait()
        shutil.rmtree(base)


def write_exemplars(directory: str, pid: int, now: float) -> None:
    """An exemplar file as a worker that saw a sampled request in every bucket of each of
    its series leaves it (the largest it can be)."""
    les = [str(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    content = {}
    for index in range(SERIES):
        key = json.dumps(["http_request_duration_seconds", LABELS, ["GET", f"/route/{index}",
                                                                     "200"], les])
        content[key] = [((pid << 64) | n, pid, 0.01, now + n) for n in range(len(les))]
    write_file(os.path.join(directory, exemplar_file_name(pid)), content)


def with_exemplars(dead: int = 1000, live: int = 4, rounds: int = 7) -> None:
    """The scrape with process metrics and exemplars after ``dead`` recycles, ``live``
    workers alive, beside prometheus_client on a copy of the same directory."""
    base = tempfile.mkdtemp(prefix="mp-bench-ex-")
    workers = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE) for _ in range(live)]
    try:
        original = os.path.join(base, "original")
        os.mkdir(original)
        now = time.time()
        for proc in workers:
            write_worker(original, proc.pid)
            write_exemplars(original, proc.pid, now)
        for pid in dead_pids(dead):
            write_worker(original, pid)
            write_exemplars(original, pid, now - 100)
            with open(os.path.join(original, f"{EXIT_PREFIX}{pid}.json"), "w") as file:
                json.dump({"pid": pid, "cpu": 0.5}, file)
        copies = {}
        for name in ("upstream", "ours"):
            copies[name] = os.path.join(base, name)
            shutil.copytree(original, copies[name])
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=copies["upstream"])
        ProcessCollector(registry=registry)
        ours = _Metrics(copies["ours"], True)
        start = time.perf_counter()
        body = generate_openmetrics(ours)  # type: ignore[arg-type]
        first = (time.perf_counter() - start) * 1000
        shown = body.count(b" # {")
        times: dict[str, list[float]] = {"upstream": [], "ours": []}
        for _ in range(rounds):
            for name, view in (("upstream", registry), ("ours", ours)):
                start = time.perf_counter()
                generate_openmetrics(view)  # type: ignore[arg-type]
                times[name].append((time.perf_counter() - start) * 1000)
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"\nwith exemplars and process metrics: {live} live workers, {dead} recycled,"
              f" every bucket of {SERIES} series with an exemplar; OpenMetrics, ms (median of"
              f" {rounds} interleaved rounds)")
        print(f"  prometheus_client MultiProcessCollector + ProcessCollector:"
              f" {med['upstream']:.1f} (no exemplars)")
        print(f"  ours, 1st scrape (compacts {dead} exemplar files too): {first:.1f}")
        print(f"  ours, next scrapes: {med['ours']:.1f} ({shown} exemplars shown)")
    finally:
        for proc in workers:
            proc.kill()
            proc.wait()
        shutil.rmtree(base)


def with_child_exit(dead: int = 1000, live: int = 4, rounds: int = 7) -> None:
    """The same recycles under gunicorn with our ``child_exit``: each dead worker's files
    are folded into the archives as it exits (in the arbiter), so the first scrape after
    them is like any other. Also what that costs the arbiter per exit."""
    base = tempfile.mkdtemp(prefix="mp-bench-exit-")
    workers = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE) for _ in range(live)]
    try:
        now = time.time()
        for proc in workers:
            write_worker(base, proc.pid)
            write_exemplars(base, proc.pid, now)
        folds = []
        for pid in dead_pids(dead):
            write_worker(base, pid)
            write_exemplars(base, pid, now - 100)
            start = time.perf_counter()
            fold_dead_workers(base)
            folds.append((time.perf_counter() - start) * 1000)
        ours = _Metrics(base, True)
        start = time.perf_counter()
        generate_openmetrics(ours)  # type: ignore[arg-type]
        first = (time.perf_counter() - start) * 1000
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            generate_openmetrics(ours)  # type: ignore[arg-type]
            times.append((time.perf_counter() - start) * 1000)
        print(f"\nunder gunicorn with child_exit (each of {dead} workers folded as it exits):"
              f" fold per exit {statistics.median(folds):.1f} ms median,"
              f" {max(folds):.1f} ms max; 1st scrape {first:.1f} ms,"
              f" next {statistics.median(times):.1f} ms")
    finally:
        for proc in workers:
            proc.kill()
            proc.wait()
        shutil.rmtree(base)


def per_request_cost() -> None:
    """Run in a child with ``PROMETHEUS_MULTIPROC_DIR`` set: µs per ``observe``."""
    from asgi_metrics.core.naming import metric_names
    from asgi_metrics.core.settings import Settings
    from asgi_metrics.multiprocess.store import MultiprocessStore

    settings = Settings()
    store = MultiprocessStore(metric_names(settings), {}, settings.buckets,
                              settings.size_buckets)
    key = ("GET", "/route/{id}", "200")
    span = ((0xABC << 64) | 0xDEF, 0x1234)
    batch, rounds = 20_000, 15
    for exemplar in (None, span):  # warm up: series and exemplar slots made
        store.observe(key, 0.02, None, exemplar)
    times: dict[str, list[float]] = {"without": [], "with": []}
    observe = store.observe
    for _ in range(rounds):
        for name, exemplar in (("without", None), ("with", span)):
            start = time.process_time()
            for _ in range(batch):
                observe(key, 0.02, None, exemplar)
            times[name].append((time.process_time() - start) / batch * 1e6)
    med = {name: statistics.median(values) for name, values in times.items()}
    paired = statistics.median(w - o for w, o in zip(times["with"], times["without"],
                                                       strict=True))
    print(f"\nper request, multiprocess store (µs, median of {rounds} interleaved rounds of"
          f" {batch:,}): observe {med['without']:.2f} without an exemplar, {med['with']:.2f}"
          f" with one: +{paired:.2f} µs for the exemplar (paired)")


def per_request() -> None:
    directory = tempfile.mkdtemp(prefix="mp-bench-req-")
    try:
        subprocess.run([sys.executable, os.path.abspath(__file__), "--per-request"],
                       env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}, check=True)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    if "--per-request" in sys.argv:
        per_request_cost()
    elif "--exemplars" in sys.argv:
        with_exemplars()
        with_child_exit()
        per_request()
    else:
        main()
        with_process_metrics()
        with_exemplars()
        with_child_exit()
        per_request()

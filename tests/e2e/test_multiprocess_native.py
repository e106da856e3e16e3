"""Native histograms in multiprocess mode: several real processes (each a fresh Python
with PROMETHEUS_MULTIPROC_DIR, a WSGI middleware with native histograms, requests through
it) write into one directory, threads in each; one is killed with SIGKILL. The directory
read back has exactly the native buckets of every value recorded, at the schema the cap
forced, the dead worker's counts included, and each native count equals the classic
``_count`` and the derived request counter."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from asgi_metrics.core.naming import metric_names
from asgi_metrics.core.native import bucket_index
from asgi_metrics.core.settings import Settings
from asgi_metrics.exposition.protobuf import encode_metrics
from asgi_metrics.multiprocess.directory import (
    clean_multiproc_dir,
    collect_directory_with_native,
)
from asgi_metrics.multiprocess.native_files import native_lookup, native_tables
from tests.support.paths import ROOT

WORKERS = 4
THREADS = 3
PER_THREAD = 300
ROUTES = ("/a", "/b")

# One worker: requests through the real WSGI middleware, durations chosen by the app
# (it reports its own, below, through a clock the test controls).
WORKER = """
import random, sys, threading, time
from wsgi_metrics import MetricsMiddleware

seed, threads, per_thread, hang = (int(a) for a in sys.argv[1:5])

def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]

mw = MetricsMiddleware(app, native_histograms=True, native_histogram_max_buckets=12,
                       request_size=True, route_resolver=lambda environ: environ["PATH_INFO"])

def run(t):
    rng = random.Random(seed * 100 + t)
    for i in range(per_thread):
        path = ("/a", "/b")[i % 2]
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "x",
                   "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL":
                   "HTTP/1.1", "CONTENT_LENGTH": str(rng.randint(1, 10**6)),
                   "wsgi.input": __import__("io").BytesIO(b"")}
        body = mw(environ, lambda status, headers, exc_info=None: None)
        for _ in body:
            pass
        body.close()

workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print("done", flush=True)
if hang:
    time.sleep(60)  # killed here: its files are a dead worker's
"""


def _expected_sizes(seed: int) -> list[float]:
    sizes = []
    for t in range(THREADS):
        rng = random.Random(seed * 100 + t)
        sizes.extend(float(rng.randint(1, 10**6)) for _ in range(PER_THREAD))
    return sizes


def test_several_processes_exact_native_histograms_and_a_dead_workers_kept(
    tmp_path: Path,
) -> None:
    clean_multiproc_dir(str(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HTTP_METRICS_")}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER), str(seed), str(THREADS),
             str(PER_THREAD), "1" if seed in (0, 1) else "0"],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in range(WORKERS)
    ]
    try:
        for proc in procs[:2]:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "done"
        procs[0].send_signal(signal.SIGKILL)  # dies without any clean-up of its own
        for proc in (procs[0], *procs[2:]):
            proc.wait(timeout=120)
        # procs[1] is still alive (sleeping) while the directory is read.
        metrics, natives = collect_directory_with_native(str(tmp_path))
        files = sorted(p.name for p in tmp_path.glob("asgi_metrics.native_*"))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    for proc in procs[2:]:
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert procs[0].returncode == -signal.SIGKILL
    # The three dead workers' files (the killed one's too) were merged into the archive;
    # the live one's is read as it is.
    assert len(files) == 2 and "asgi_metrics.native_archive.bin" in files
    assert files[0].startswith(f"asgi_metrics.native_{procs[1].pid}_")
    names = metric_names(Settings.build({"request_size": True}, environ={}))
    tables = native_tables(natives, names)
    total = WORKERS * THREADS * PER_THREAD

    # Durations: the native count of each series is its classic _count and its request
    # counter, and the directory holds every request of every worker, the killed one too.
    counts = {
        (sample.name, sample.labels["route"]): sample.value
        for metric in metrics for sample in metric.samples
        if sample.name in (f"{names.duration.name}_count", f"{names.requests.name}_total")
    }
    durations = tables["requests"]
    assert {key[1] for key in durations} == set(ROUTES)
    assert sum(series.count for series in durations.values()) == total
    for key, series in durations.items():
        assert series.count == counts[(f"{names.duration.name}_count", key[1])]
        assert series.count == counts[(f"{names.requests.name}_total", key[1])]
        assert series.count == series.zero_count + sum(series.positive.values())
        assert len(series.positive) <= 12

    # The protobuf encoder finds each classic series' native form by the labels the
    # classic series has in prometheus_client's files (native_lookup), and adds it.
    lookup = native_lookup(natives, str(tmp_path))
    duration = next(m for m in metrics if m.name == names.duration.name)
    found = 0
    for sample in duration.samples:
        if sample.name == f"{names.duration.name}_count":
            series = lookup(names.duration.name, tuple(sorted(sample.labels.items())))
            assert series is not None and series.count == sample.value
            found += 1
    assert found == len(ROUTES)
    assert len(encode_metrics(metrics, lookup)) > len(encode_metrics(metrics))

    # Request sizes are known exactly: the native buckets are those of every size, at the
    # schema the cap of 12 buckets forced, summed over the processes.
    sizes = {route: [] for route in ROUTES}  # type: dict[str, list[float]]
    for seed in range(WORKERS):
        for i, size in enumerate(_expected_sizes(seed)):
            sizes[ROUTES[(i % PER_THREAD) % 2]].append(size)
    for key, series in tables["request_size"].items():
        want: dict[int, int] = {}
        for size in sizes[key[1]]:
            index = bucket_index(size, series.schema)
            want[index] = want.get(index, 0) + 1
        assert series.positive == want
        assert len(want) <= 12 and series.schema < 3
        assert len({bucket_index(s, series.schema + 1) for s in sizes[key[1]]}) > 12
        assert math.isclose(series.sum, math.fsum(sizes[key[1]]))
        assert series.count == len(sizes[key[1]])

    # Read again, now that the fourth worker is dead too: its file is merged as well, and
    # the totals are the same (nothing counted twice, nothing lost).
    _, again = collect_directory_with_native(str(tmp_path))
    assert native_tables(again, names) == tables
    assert sorted(p.name for p in tmp_path.glob("asgi_metrics.native_*")) == [
        "asgi_metrics.native_archive.bin"
    ]
    (tmp_path / "asgi_metrics.native_archive.bin").unlink()
    assert collect_directory_with_native(str(tmp_path))[1] == {}

"""Multiprocess mode without servers: compaction of dead workers' files (totals preserved
exactly, also against interrupted compactions), the dead-worker sweep, the gunicorn hook
and the start-up checks (in a fresh Python, for a fresh prometheus_client import). Under
real servers, several processes racing on one directory, and a worker process read by
others: tests/e2e/test_multiprocess_*.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from asgi_metrics.multiprocess import directory as multiprocess
from asgi_metrics.multiprocess.directory import (
    JOURNAL_FILE,
    announce_derived_counter,
    child_exit,
    clean_multiproc_dir,
    collect_directory,
)
from asgi_metrics.multiprocess.workers import detect_workers, workers_flag
from tests.support.multiprocess import dead_pid, reference, values, write_worker
from tests.support.paths import ROOT
from tests.support.processes import run_python


def test_compaction_preserves_totals_exactly(tmp_path: Path) -> None:
    for index in range(40):
        write_worker(tmp_path, dead_pid(), scale=index + 1)
    write_worker(tmp_path, os.getpid(), scale=1000, gauge=2)  # alive: left alone
    before = reference(tmp_path)
    # Dead workers' in-flight gauges are swept; only the live worker's 2 remains.
    before[("busy", ())] = 2.0
    after = values(collect_directory(str(tmp_path)))
    assert after == before
    names = sorted(p.name for p in tmp_path.glob("*.db"))
    assert names == sorted([
        "counter_archive.db", f"counter_{os.getpid()}.db", f"gauge_livesum_{os.getpid()}.db",
        "histogram_archive.db", f"histogram_{os.getpid()}.db",
    ])
    # More dead workers later are added to the archive, again exactly.
    for index in range(5):
        write_worker(tmp_path, dead_pid(), scale=0.5 * index)
    expected = reference(tmp_path)
    expected[("busy", ())] = 2.0
    assert values(collect_directory(str(tmp_path))) == expected
    assert values(collect_directory(str(tmp_path))) == expected  # idempotent


def test_announced_counter_is_derived_exactly_from_the_directory(tmp_path: Path) -> None:
    for index in range(3):
        write_worker(tmp_path, dead_pid(), scale=index + 1)
    write_worker(tmp_path, os.getpid(), scale=7)
    assert "reqs" not in {metric.name for metric in collect_directory(str(tmp_path))}
    announce_derived_counter(str(tmp_path), "reqs", "Requests.", "dur")
    announce_derived_counter(str(tmp_path), "reqs", "Requests.", "dur")  # every worker does
    (tmp_path / "asgi_metrics.derived.junk.json").write_text("{not json")
    metrics = {metric.name: metric for metric in collect_directory(str(tmp_path))}
    counter = metrics["reqs"]
    assert (counter.type, counter.documentation) == ("counter", "Requests.")
    counts = {tuple(s.labels.items()): s.value for s in metrics["dur"].samples
              if s.name == "dur_count"}
    assert {tuple(s.labels.items()): s.value for s in counter.samples} == counts
    # Buckets are written 1, 2, 3 (not cumulative): the count is 6 per unit of scale.
    assert counts == {(("route", "/a"),): 6 * (1 + 2 + 3 + 7), (("route", "/b"),): 6 * 13}
    assert all(s.name == "reqs_total" for s in counter.samples)
    # The histogram's own collector in the same directory is untouched.
    assert set(metrics) == {"errors", "dur", "busy", "reqs"}


def test_dead_workers_in_flight_gauge_is_swept(tmp_path: Path) -> None:
    gone = dead_pid()
    write_worker(tmp_path, gone, gauge=3)
    write_worker(tmp_path, os.getpid(), gauge=1)
    assert values(collect_directory(str(tmp_path)))[("busy", ())] == 1
    assert not (tmp_path / f"gauge_livesum_{gone}.db").exists()


def test_zombie_counts_as_dead() -> None:
    proc = subprocess.Popen(["true"])
    import time
    deadline = time.monotonic() + 5
    while multiprocess.is_alive(proc.pid):  # a zombie until reaped below
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.wait()
    assert not multiprocess.is_alive(proc.pid)
    assert multiprocess.is_alive(os.getpid())


def test_interrupted_compaction_rolls_forward(tmp_path: Path, monkeypatch: Any) -> None:
    for _ in range(3):
        write_worker(tmp_path, dead_pid())
    expected = reference(tmp_path)
    expected[("busy", ())] = 0.0
    # Die right after the journal is written: new archives complete, nothing replaced
    # and nothing deleted yet (the compaction calls _recover to carry the journal out).
    def crash(path: str) -> None:
        raise SystemExit("killed")

    monkeypatch.setattr(multiprocess, "_recover", crash)
    with pytest.raises(SystemExit):
        multiprocess._compact(str(tmp_path), {
            "counter": [p.name for p in tmp_path.glob("counter_*.db")],
            "histogram": [p.name for p in tmp_path.glob("histogram_*.db")],
        })
    monkeypatch.undo()
    assert (tmp_path / JOURNAL_FILE).exists()
    assert json.loads((tmp_path / JOURNAL_FILE).read_text())["delete"]
    found = values(collect_directory(str(tmp_path)))
    found.setdefault(("busy", ()), 0.0)
    assert found == expected
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_stale_temporary_archive_without_journal_is_ignored(tmp_path: Path) -> None:
    write_worker(tmp_path, dead_pid())
    expected = reference(tmp_path)
    junk = MmapedDict(str(tmp_path / "counter_archive.db.tmp"))
    junk.write_value(mmap_key("errors", "errors_total", ["route"], ["/a"], "h"), 999, 0.0)
    junk.close()
    found = values(collect_directory(str(tmp_path)))
    found.pop(("busy", ()), None)
    expected.pop(("busy", ()), None)
    assert found == expected


def test_child_exit_never_raises_and_folds_the_dead_worker(
    tmp_path: Path, monkeypatch: Any
) -> None:
    class Worker:
        pid = 4242

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    child_exit(None, Worker())  # directory not set
    child_exit(None, object())  # no pid
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    child_exit(None, Worker())
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    Worker.pid = dead_pid()
    write_worker(tmp_path, Worker.pid, gauge=1)
    before = reference(tmp_path)
    child_exit(None, Worker())
    assert not (tmp_path / f"gauge_livesum_{Worker.pid}.db").exists()
    # Its counts stay (they never go back), folded into the archive at once.
    assert not (tmp_path / f"counter_{Worker.pid}.db").exists()
    assert (tmp_path / "counter_archive.db").exists()
    del before[("busy", ())]  # not in flight any more
    assert values(collect_directory(str(tmp_path))) == before
    monkeypatch.setattr(multiprocess, "mark_process_dead", lambda *a: 1 / 0)
    child_exit(None, Worker())


def test_clean_multiproc_dir(tmp_path: Path) -> None:
    write_worker(tmp_path, 1)
    announce_derived_counter(str(tmp_path), "reqs", "h", "dur")
    (tmp_path / "asgi_metrics.derived.reqs.json.1.2.tmp").write_text("{")  # a writer died
    (tmp_path / "keep.txt").write_text("not ours")
    clean_multiproc_dir(str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    clean_multiproc_dir(str(tmp_path / "new"))
    assert (tmp_path / "new").is_dir()


BUILD = """
    from asgi_metrics import MetricsMiddleware
    async def app(scope, receive, send): pass
    MetricsMiddleware(app)
    MetricsMiddleware(app)
    print("built")
"""


def test_directory_set_after_prometheus_client_import_fails_early(tmp_path: Path) -> None:
    result = run_python(
        "import os, prometheus_client\n"
        f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(tmp_path)!r}\n"
        + textwrap.dedent(BUILD), {})
    assert result.returncode != 0
    assert "ConfigurationError" in result.stderr
    assert "imported before it was set" in result.stderr


def test_missing_directory_fails_early(tmp_path: Path) -> None:
    result = run_python(BUILD, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "nope")})
    assert result.returncode != 0
    assert "is not an existing directory" in result.stderr and "mkdir -p" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory_fails_early(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        result = run_python(BUILD, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    finally:
        tmp_path.chmod(0o700)
    assert result.returncode != 0 and "is not writable" in result.stderr


def test_unwritable_directory_fails_early_as_another_user(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("covered by the non-root test")
    # Under /tmp itself: pytest's own directories are not searchable by other users.
    directory = tempfile.mkdtemp(prefix="multiproc-")
    os.chmod(directory, 0o755)
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
         "-c", textwrap.dedent(BUILD)],
        env={"PROMETHEUS_MULTIPROC_DIR": directory, "PYTHONPATH": str(ROOT),
             "PATH": os.environ.get("PATH", "")},
        capture_output=True, text=True, timeout=60, cwd="/",
    )
    os.rmdir(directory)
    if "setpriv" in result.stderr and "built" not in result.stdout and result.returncode == 127:
        pytest.skip("setpriv unavailable")
    assert result.returncode != 0, result.stdout
    assert "is not writable" in result.stderr, result.stderr


def test_exemplars_stay_on_in_multiprocess_mode(tmp_path: Path) -> None:
    result = run_python(
        "from asgi_metrics.core.settings import Settings\n"
        "from asgi_metrics.wiring import build\n"
        "print('exemplars', build(Settings()).exemplars)\n",
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert "exemplars are not supported" not in result.stderr
    assert "exemplars True" in result.stdout


def test_detect_workers_heuristics() -> None:
    assert detect_workers({"GUNICORN_CMD_ARGS": "--workers 4 --bind :80"}) == (
        4, "GUNICORN_CMD_ARGS='--workers 4 --bind :80'")
    assert detect_workers({"GUNICORN_CMD_ARGS": "-w 1"}) is None
    assert workers_flag(["uvicorn", "app:app", "--workers=3"]) == 3
    assert workers_flag(["gunicorn", "-w4", "app:app"]) == 4
    assert workers_flag(["gunicorn", "app:app"]) is None


GRANIAN = "/venv/bin/granian"
HYPERCORN = "/venv/bin/hypercorn"


@pytest.mark.parametrize("argv,env,expected", [
    ([GRANIAN, "--interface", "asgi", "--workers", "2", "app:app"], {}, 2),
    ([GRANIAN, "--interface", "asgi", "--workers=3", "app:app"], {}, 3),
    ([sys.executable, "-m", "granian", "--workers", "4", "app:app"], {}, 4),
    ([GRANIAN, "--interface", "asgi", "app:app"], {"GRANIAN_WORKERS": "4"}, 4),
    # The command line wins over the environment (click's rule, granian's CLI).
    ([GRANIAN, "--workers", "1", "app:app"], {"GRANIAN_WORKERS": "4"}, None),
    ([GRANIAN, "--interface", "asgi", "app:app"], {"GRANIAN_WORKERS": "1"}, None),
    ([GRANIAN, "--interface", "asgi", "app:app"], {"GRANIAN_WORKERS": "many"}, None),
    ([GRANIAN, "--interface", "asgi", "app:app"], {}, None),
    ([HYPERCORN, "-w", "2", "app:app"], {}, 2),
    ([HYPERCORN, "-w3", "app:app"], {}, 3),
    ([HYPERCORN, "--workers", "4", "--bind", "0.0.0.0:80", "app:app"], {}, 4),
    ([HYPERCORN, "--workers=5", "app:app"], {}, 5),
    ([HYPERCORN, "-w", "1", "app:app"], {}, None),
    ([HYPERCORN, "app:app"], {}, None),
    # WEB_CONCURRENCY is gunicorn's and uvicorn's, not hypercorn's or granian's.
    ([HYPERCORN, "app:app"], {"WEB_CONCURRENCY": "4"}, None),
])
def test_detect_workers_granian_and_hypercorn(
    argv: list[str], env: dict[str, str], expected: int | None, monkeypatch: Any
) -> None:
    # A worker's own sys.argv is the server's command line (fork, or multiprocessing's
    # spawn handing the parent's sys.argv over): that is what these fabricate.
    monkeypatch.setattr(sys, "argv", argv)
    found = detect_workers(env)
    assert (found[0] if found else None) == expected, found


def test_detect_workers_never_raises_on_odd_input(monkeypatch: Any) -> None:
    monkeypatch.setattr(sys, "argv", [GRANIAN, "--workers"])
    assert detect_workers({"GRANIAN_WORKERS": "-1", "GUNICORN_CMD_ARGS": "-w"}) is None
    monkeypatch.setattr(sys, "argv", [HYPERCORN, "-w", "x", "--workers="])
    assert detect_workers({"WEB_CONCURRENCY": "0x10"}) is None


def test_label_set_cap_holds_in_multiprocess_mode(tmp_path: Path) -> None:
    # Through a real middleware in a process whose prometheus_client is in multiprocess
    # mode: 500 distinct routes against a cap of 50, then the directory is read back.
    result = run_python(
        """
        import asyncio
        from prometheus_client import CollectorRegistry
        from prometheus_client.parser import text_string_to_metric_families
        from asgi_metrics import MetricsMiddleware

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def main():
            middleware = MetricsMiddleware(
                app, registry=CollectorRegistry(), max_label_sets=50,
                route_resolver=lambda scope: scope["path"],
            )

            async def receive():
                return {"type": "http.request", "body": b""}

            async def send(message):
                pass

            for index in range(500):
                scope = {"type": "http", "method": "GET", "path": f"/r/{index}"}
                await middleware(scope, receive, send)
            text = middleware.exposition.render(False).decode()
            counts = [
                sample for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == "http_requests_total"
            ]
            print(len(counts), sum(sample.value for sample in counts))
            print(middleware.recorder.store.label_set_count("requests"))

        asyncio.run(main())
        """,
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    series, total, admitted = result.stdout.split()
    assert (int(series), float(total), int(admitted)) == (50, 500.0, 50)
    assert result.stderr.count("max_label_sets=50") == 1


def test_preloaded_app_announces_again_after_the_directory_is_emptied(tmp_path: Path) -> None:
    # gunicorn --preload: the middleware is built in the arbiter, then on_starting empties
    # the directory, then the workers are forked and never build the middleware again.
    result = run_python(
        """
        import asyncio, os
        from prometheus_client import CollectorRegistry
        from asgi_metrics import MetricsMiddleware
        from asgi_metrics.multiprocess.directory import clean_multiproc_dir, derived_counters

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        async def receive():
            return {"type": "http.request", "body": b""}

        async def send(message):
            pass

        middleware = MetricsMiddleware(app, registry=CollectorRegistry())
        clean_multiproc_dir()
        print(derived_counters(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
        pid = os.fork()
        if pid == 0:
            scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
            asyncio.run(middleware(scope, receive, send))
            os._exit(0)
        os.waitpid(pid, 0)
        print(derived_counters(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
        """,
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "[]"
    assert after == str([("http_requests", "Total HTTP requests served.",
                          "http_request_duration_seconds")])

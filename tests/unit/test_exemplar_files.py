"""The multiprocess exemplar files: several real processes writing one directory, the latest
exemplar per series and bucket winning by timestamp, dead workers' exemplars kept in the
archive until replaced, bounded sizes, slots caught mid-write, and the scrape of the
directory (OpenMetrics and protobuf) through a real multiprocess store in a fresh Python.
Under real servers and Prometheus: tests/e2e/test_multiprocess_exemplars.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from asgi_metrics.multiprocess.directory import clean_multiproc_dir, is_alive
from asgi_metrics.multiprocess.exemplar_files import (
    ARCHIVE_NAME,
    SLOT_SIZE,
    ExemplarFile,
    Exemplars,
    collect_exemplars,
    exemplar_file_name,
    read_file,
    write_file,
)
from tests.support.multiprocess import dead_pid
from tests.support.processes import run_python

LES = ["0.1", "1.0", "+Inf"]
NAMES = ["method", "route", "status", "app"]


def open_file(directory: Path) -> ExemplarFile:
    return ExemplarFile(str(directory), "dur", NAMES, ["x"], LES)


def key_text(route: str) -> str:
    return json.dumps(["dur", NAMES, ["GET", route, "200", "x"], LES])


def write_in_child(directory: str, route: str, index: int, trace_id: int) -> None:
    exemplars = open_file(Path(directory))
    exemplars.record(("GET", route, "200"), index, trace_id, (trace_id + 1) % 2**64, 0.5)
    exemplars.close()


def run_child(directory: Path, route: str, index: int, trace_id: int) -> int:
    context = multiprocessing.get_context("fork")
    child = context.Process(target=write_in_child, args=(str(directory), route, index, trace_id))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert child.pid is not None
    return child.pid


def test_several_processes_latest_wins_and_the_dead_are_kept(tmp_path: Path) -> None:
    # Three workers one after the other, all dead by the scrape: bucket 1 of /a written by
    # the first and the third (the third is later), /b by the second.
    first = run_child(tmp_path, "/a", 1, 0xA1 << 64)
    time.sleep(0.01)
    second = run_child(tmp_path, "/b", 0, 0xB2)
    time.sleep(0.01)
    third = run_child(tmp_path, "/a", 1, 0xA3)
    assert {exemplar_file_name(pid) for pid in (first, second, third)} <= {
        p.name for p in tmp_path.iterdir()}
    found = collect_exemplars(str(tmp_path), is_alive)
    slots = found[key_text("/a")]
    assert slots[0] is None and slots[2] is None
    assert slots[1] is not None and slots[1][:3] == (0xA3, 0xA4, 0.5)
    assert found[key_text("/b")][0][:2] == (0xB2, 0xB3)  # type: ignore[index]
    # Compacted: the dead workers' files are gone, their exemplars are in the archive.
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVE_NAME]
    assert collect_exemplars(str(tmp_path), is_alive) == found
    # A live worker's newer exemplar replaces the archived one; the others stay.
    live = open_file(tmp_path)
    live.record(("GET", "/a", "200"), 1, 0xC0FFEE, 7, 0.25)
    again = collect_exemplars(str(tmp_path), is_alive)
    assert again[key_text("/a")][1][:3] == (0xC0FFEE, 7, 0.25)  # type: ignore[index]
    assert again[key_text("/b")] == found[key_text("/b")]
    live.close()


def test_latest_wins_by_timestamp_not_by_file_order(tmp_path: Path) -> None:
    older: Exemplars = {key_text("/a"): [(1, 1, 0.05, 100.0), None, (3, 3, 9.0, 300.0)]}
    newer: Exemplars = {key_text("/a"): [(2, 2, 0.07, 200.0), None, None]}
    for pid, content in ((dead_pid(), newer), (dead_pid(), older)):
        write_file(str(tmp_path / exemplar_file_name(pid)), content)
    found = collect_exemplars(str(tmp_path), is_alive)
    assert found == {key_text("/a"): [(2, 2, 0.07, 200.0), None, (3, 3, 9.0, 300.0)]}


def test_trace_ids_keep_all_128_bits(tmp_path: Path) -> None:
    exemplars = open_file(tmp_path)
    trace_id = (1 << 128) - 2
    span_id = (1 << 64) - 3
    exemplars.record(("GET", "/a", "200"), 2, trace_id, span_id, 12.5)
    found, torn = read_file(str(tmp_path / exemplar_file_name(os.getpid())))
    assert not torn
    slot = found[key_text("/a")][2]
    assert slot is not None and slot[:3] == (trace_id, span_id, 12.5)
    assert abs(slot[3] - time.time()) < 60
    exemplars.close()


def test_a_worker_file_and_the_archive_stay_bounded(tmp_path: Path) -> None:
    exemplars = open_file(tmp_path)
    path = tmp_path / exemplar_file_name(os.getpid())
    for n in range(5000):
        exemplars.record(("GET", f"/r{n % 20}", "200"), n % 3, n + 1, n, 0.5)
    used = int.from_bytes(path.read_bytes()[:4], "little")
    entry = 8 + len(key_text("/r10")) + 8 + 3 * SLOT_SIZE  # an upper bound per series
    assert used <= 8 + 20 * entry
    size = path.stat().st_size
    for n in range(5000):
        exemplars.record(("GET", f"/r{n % 20}", "200"), n % 3, n + 1, n, 0.5)
    assert path.stat().st_size == size
    exemplars.close()
    path.unlink()
    # 300 dead workers (PIDs past Linux's largest pid_max), each with the same 20 series:
    # the archive holds 20 series, each bucket the latest exemplar.
    for worker in range(300):
        content: Exemplars = {key_text(f"/r{n}"): [(worker + 1, n, 0.5, float(worker)),
                                                   None, None] for n in range(20)}
        write_file(str(tmp_path / exemplar_file_name(2**23 + worker)), content)
    found = collect_exemplars(str(tmp_path), is_alive)
    assert len(found) == 20
    assert all(slots[0] is not None and slots[0][0] == 300 for slots in found.values())
    archive = (tmp_path / ARCHIVE_NAME).stat().st_size
    assert archive <= 8 + 20 * entry
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVE_NAME]


def test_a_torn_slot_is_skipped_not_shown(tmp_path: Path) -> None:
    pid = dead_pid()
    path = tmp_path / exemplar_file_name(pid)
    write_file(str(path), {key_text("/a"): [(1, 1, 0.05, 100.0), (2, 2, 0.5, 200.0), None]})
    data = bytearray(path.read_bytes())
    first_slot = len(data) - 3 * SLOT_SIZE
    data[first_slot + 3] ^= 0xFF  # a trace ID byte changed, its checksum not
    path.write_bytes(bytes(data))
    found, torn = read_file(str(path))
    assert torn
    assert found[key_text("/a")] == [None, (2, 2, 0.5, 200.0), None]


def test_a_truncated_file_shows_its_complete_entries(tmp_path: Path) -> None:
    path = tmp_path / exemplar_file_name(dead_pid())
    write_file(str(path), {key_text("/a"): [(1, 1, 0.05, 100.0), None, None],
                           key_text("/b"): [(2, 2, 0.05, 100.0), None, None]})
    data = path.read_bytes()
    path.write_bytes(data[:-10])  # killed while appending /b: the header says more
    found, _ = read_file(str(path))
    assert list(found) == [key_text("/a")]


def test_a_forked_child_writes_its_own_file(tmp_path: Path) -> None:
    exemplars = open_file(tmp_path)
    exemplars.record(("GET", "/a", "200"), 0, 1, 1, 0.05)  # opened in the parent
    context = multiprocessing.get_context("fork")
    child = context.Process(target=exemplars.record, args=(("GET", "/a", "200"), 0, 2, 2, 0.05))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and child.pid is not None
    mine, _ = read_file(str(tmp_path / exemplar_file_name(os.getpid())))
    theirs, _ = read_file(str(tmp_path / exemplar_file_name(child.pid)))
    assert mine[key_text("/a")][0][0] == 1  # type: ignore[index]
    assert theirs[key_text("/a")][0][0] == 2  # type: ignore[index]
    exemplars.close()


def test_clean_removes_the_exemplar_files(tmp_path: Path) -> None:
    write_file(str(tmp_path / exemplar_file_name(dead_pid())), {})
    write_file(str(tmp_path / ARCHIVE_NAME), {})
    clean_multiproc_dir(str(tmp_path))
    assert list(tmp_path.iterdir()) == []


SCRAPE = """
    import os, sys
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    from asgi_metrics.core.naming import metric_names
    from asgi_metrics.core.settings import Settings
    from asgi_metrics.exposition.scrape import Exposition
    from asgi_metrics.multiprocess.store import MultiprocessStore
    from prometheus_client import CollectorRegistry
    from tests.support.protobuf import parse_delimited

    settings = Settings(const_labels={"app": "x"})
    names = metric_names(settings)
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    store = MultiprocessStore(names, {"app": "x"}, settings.buckets, settings.size_buckets,
                              directory=directory)
    pid = os.fork()
    if pid == 0:  # another worker, which serves one request and dies
        store.observe(("GET", "/a", "200"), 0.02, None, ((0xAB << 64) | 1, 0xCD))
        os._exit(0)
    os.waitpid(pid, 0)
    store.observe(("GET", "/a", "200"), 0.3, None, (0xEF, 0x12))
    store.observe(("GET", "/b", "200"), 0.3, None, None)
    exposition = Exposition(CollectorRegistry())
    text = exposition.render(openmetrics=True).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                print("OM", sample.name, sample.labels.get("route"), sample.labels.get("le"),
                      sample.exemplar.labels["trace_id"], sample.exemplar.labels["span_id"],
                      sample.exemplar.value)
    for family in parse_delimited(exposition.render_protobuf()):
        for metric in family.metric:
            route = {p.name: p.value for p in metric.label}.get("route")
            if metric.HasField("counter") and metric.counter.HasField("exemplar"):
                ids = {p.name: p.value for p in metric.counter.exemplar.label}
                print("PB", family.name, route, ids["trace_id"], metric.counter.exemplar.value)
            if metric.HasField("histogram"):
                for bucket in metric.histogram.bucket:
                    if bucket.HasField("exemplar"):
                        ids = {p.name: p.value for p in bucket.exemplar.label}
                        print("PB", family.name, route, bucket.upper_bound, ids["trace_id"],
                              ids["span_id"])
"""


def test_a_scrape_shows_every_workers_latest_exemplars(tmp_path: Path) -> None:
    result = run_python(SCRAPE, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    dead = f"{(0xAB << 64) | 1:032x}"
    live = f"{0xEF:032x}"
    assert lines == {
        # The dead worker's on its bucket, the live one's on its own; the counter shows
        # the series' latest, with the increment as its value.
        f"OM http_request_duration_seconds_bucket /a 0.025 {dead} {0xCD:016x} 0.02",
        f"OM http_request_duration_seconds_bucket /a 0.5 {live} {0x12:016x} 0.3",
        f"OM http_requests_total /a None {live} {0x12:016x} 1.0",
        f"PB http_request_duration_seconds /a 0.025 {dead} {0xCD:016x}",
        f"PB http_request_duration_seconds /a 0.5 {live} {0x12:016x}",
        f"PB http_requests_total /a {live} 1.0",
    }, result.stdout


@pytest.mark.parametrize("value", [0.0, 1e-9, 123.0])
def test_an_exemplar_in_the_first_and_last_bucket(tmp_path: Path, value: float) -> None:
    exemplars = open_file(tmp_path)
    exemplars.record(("GET", "/a", "200"), 0, 5, 6, value)
    exemplars.record(("GET", "/a", "200"), 2, 7, 8, value)
    found = collect_exemplars(str(tmp_path), is_alive)
    slots = found[key_text("/a")]
    assert [slot[0] if slot else None for slot in slots] == [5, None, 7]
    exemplars.close()

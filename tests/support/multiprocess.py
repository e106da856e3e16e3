"""A multiprocess directory as workers leave it: prometheus_client's files written by
hand (for live and dead PIDs), and what a collector reads back from it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

LES = ["0.1", "1.0", "+Inf"]


def dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_worker(directory: Path, pid: int | str, scale: float = 1.0, gauge: float = 0) -> None:
    """Files like a worker's: a counter, a histogram and a livesum gauge. Values are
    multiples of 1/8, so sums are exact in any order."""
    counter = MmapedDict(str(directory / f"counter_{pid}.db"))
    for route in ("/a", "/b"):
        counter.write_value(
            mmap_key("errors", "errors_total", ["route"], [route], "h"), 3 * scale, 0.0)
    counter.close()
    histogram = MmapedDict(str(directory / f"histogram_{pid}.db"))
    for route in ("/a", "/b"):
        histogram.write_value(
            mmap_key("dur", "dur_sum", ["route"], [route], "h"), 0.125 * scale, 0.0)
        for index, le in enumerate(LES):
            histogram.write_value(
                mmap_key("dur", "dur_bucket", ["route", "le"], [route, le], "h"),
                (index + 1) * scale, 0.0)
    histogram.close()
    live = MmapedDict(str(directory / f"gauge_livesum_{pid}.db"))
    live.write_value(mmap_key("busy", "busy", [], [], "h"), gauge, 0.0)
    live.close()


def values(metrics: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in metrics for sample in metric.samples
    }


def reference(directory: Path) -> dict[Any, float]:
    """What prometheus_client's own collector says (before any compaction)."""
    return values(MultiProcessCollector(None, str(directory)).collect())

"""Multiprocess mode: one app served by several worker processes (gunicorn, ``uvicorn
--workers``, ``granian --workers``, ``hypercorn -w``), each writing its numbers to
prometheus_client's files in ``PROMETHEUS_MULTIPROC_DIR``; a scrape answered by any worker
shows the sum over all.

What this module adds to prometheus_client's own multiprocess support:

* :func:`child_exit`, a gunicorn hook (``from asgi_metrics.multiprocess import child_exit``
  in ``gunicorn.conf.py``) that never raises into the arbiter;
* a sweep at scrape time of the in-flight gauge files of processes that no longer exist,
  for servers without such a hook (``uvicorn --workers``) and for ``kill -9``;
* compaction: at scrape time the counter, histogram and summary files of dead processes are
  merged into one archive file per type, so a scrape reads one file per *live* worker plus
  the archives however many workers have come and gone (``max_requests`` recycling);
* start-up checks that make a misconfiguration loud (:func:`check_directory`,
  :func:`warn_if_several_workers`) and :func:`clean_multiproc_dir` for start-up;
* derived counters: the request counter is not written to the files but derived at scrape
  time from the duration histogram's ``_count``. Which counter comes from which histogram
  is written to the directory too (:func:`announce_derived_counter`, one small file per
  counter), so any process reading the directory (a worker's ``/metrics``, a listener in
  the gunicorn arbiter, :class:`DirectoryCollector` in a sidecar) shows the same counters.

Scrapes and compactions in one directory take an exclusive ``flock`` on a lock file in it,
so a scrape never sees a dead worker's file both in the archive and on its own. Tools that
read the directory without that lock (prometheus_client's own ``MultiProcessCollector``)
can briefly miss or double-count a dead worker's numbers while a compaction runs: use
:class:`DirectoryCollector` instead.

The directory must belong to one host and one PID namespace: whether a process is alive is
decided from the PID in the file name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import struct
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from asgi_metrics.compat import (
    MmapedDict,
    accumulate_multiprocess,
    flush_mmaped,
    mark_process_dead,
    registered_collectors,
    set_multiprocess_mode,
)
from asgi_metrics.core.labels import Key
from asgi_metrics.core.native import NativeSeries
from asgi_metrics.core.settings import ConfigurationError
from asgi_metrics.multiprocess.exemplar_files import (
    EXEMPLAR_PREFIX,
    attach_exemplars,
    collect_exemplars,
)
from asgi_metrics.multiprocess.native_files import (
    NATIVE_PREFIX,
    compact_native,
    read_native,
)

# Imported here, not when first needed: in gunicorn's arbiter it notes the CPU time of the
# children reaped so far when the config imports child_exit, before any worker exits.
from asgi_metrics.multiprocess.process_metrics import (
    PROCESSES_PREFIX,
    collect_processes,
    note_exit,
)

logger = logging.getLogger("asgi_metrics")


ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = "asgi_metrics.lock"
JOURNAL_FILE = "asgi_metrics.compaction"
#: Files of dead processes are merged into ``{type}_archive.db``.
ARCHIVE_PID = "archive"
_SUMMED_TYPES = ("counter", "histogram", "summary")
_TMP_SUFFIX = ".db.tmp"
#: ``asgi_metrics.derived.<counter>.json``: a counter that a scrape derives from a histogram.
DERIVED_PREFIX = "asgi_metrics.derived."
DERIVED_SUFFIX = ".json"


def multiproc_dir(environ: Any = None) -> str | None:
    """The multiprocess directory from the environment, or ``None`` (single-process)."""
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR) or env.get(ENV_VAR.lower())
    return str(value) if value else None


# -- start-up checks --------------------------------------------------------------------


def check_directory(path: str) -> None:
    """Raise :class:`ConfigurationError` unless ``path`` is a writable directory and
    prometheus_client runs in multiprocess mode."""
    from asgi_metrics.multiprocess.store import multiprocess_value_class

    if not os.path.isdir(path):
        raise ConfigurationError(
            f"{ENV_VAR}={path!r} is not an existing directory. Create it (empty) before"
            " starting the server, e.g. `rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p"
            " \"$PROMETHEUS_MULTIPROC_DIR\"`, or unset the variable for a single process."
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"{ENV_VAR}={path!r} is not writable by this process (uid {os.getuid()}):"
            " every worker must be able to create its files there."
        )
    multiprocess_value_class()


def clean_multiproc_dir(path: str | None = None) -> None:
    """Empty the multiprocess directory (creating it if needed). Call it once when the
    server starts, before any worker (gunicorn: ``on_starting``), never while workers run:
    numbers left from an earlier run would otherwise be added to this one's."""
    path = path or multiproc_dir()
    if not path:
        raise ConfigurationError(f"{ENV_VAR} is not set and no path was given")
    os.makedirs(path, exist_ok=True)
    for entry in os.scandir(path):
        if entry.is_file() and (
            entry.name.endswith((".db", _TMP_SUFFIX))
            or entry.name in (LOCK_FILE, JOURNAL_FILE, JOURNAL_FILE + ".tmp")
            or entry.name.startswith(DERIVED_PREFIX)
            or entry.name.startswith(PROCESSES_PREFIX)
            or entry.name.startswith(NATIVE_PREFIX)  # native files, and their temporaries
            or entry.name.startswith(EXEMPLAR_PREFIX)
        ):
            os.unlink(entry.path)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn hook: a worker exited, so its in-flight requests are in flight no more.

    Put ``from asgi_metrics.multiprocess.directory import child_exit`` in ``gunicorn.conf.py``.
    Never raises into the arbiter, also when the directory is not set.
    """
    try:
        path = multiproc_dir()
        pid = getattr(worker, "pid", None)
        if path and isinstance(pid, int) and os.path.isdir(path):
            mark_process_dead(pid, path)
            note_exit(path, pid)  # its final CPU time, for the process metrics
            fold_dead_workers(path)
    except Exception:
        with contextlib.suppress(Exception):
            logger.exception("HTTP metrics: child_exit hook failed (ignored)")


def fold_dead_workers(path: str) -> bool:
    """Fold the files of workers that are gone (counts, native histograms, exemplars) into
    the directory's archives now, unless a scrape holds the directory; ``False`` then (the
    next scrape folds them, as it always does).

    Called from :func:`child_exit`, in gunicorn's arbiter, so a scrape after many recycled
    workers reads one archive instead of every dead worker's files. Without waiting: the
    arbiter must not stall behind a scrape.
    """
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        compact_native(path, is_alive)
        maintain_and_list(path)
        _exemplars(path)
        return True
    finally:
        os.close(fd)  # releases the lock


# -- reading the directory --------------------------------------------------------------


def _pid_of(name: str) -> tuple[str, str, str] | None:
    """(type, gauge mode or "", pid) from a file name like ``counter_12.db``."""
    if not name.endswith(".db"):
        return None
    parts = name[:-3].split("_")
    if parts[0] == "gauge" and len(parts) == 3:
        return "gauge", parts[1], parts[2]
    if parts[0] in _SUMMED_TYPES and len(parts) == 2:
        return parts[0], "", parts[1]
    return None


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a reaped PID can be reused, a
    zombie's cannot, so both answers are safe to act on)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
        return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")
    except (OSError, ValueError):
        return True


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _read_file(path: str) -> list[tuple[str, float, float]]:
    try:
        return [(k, v, ts) for k, v, ts, _ in MmapedDict.read_all_values_from_file(path)]
    except struct.error:
        # Created, but not yet sized (a worker between open() and truncate(), or killed
        # there): nothing in it yet.
        return []


def _recover(path: str) -> None:
    """Finish a compaction that was interrupted (the process died mid-way)."""
    journal = os.path.join(path, JOURNAL_FILE)
    try:
        with open(journal) as file:
            plan = json.load(file)
    except FileNotFoundError:
        plan = None
    except (OSError, ValueError):
        plan = {"replace": [], "delete": []}  # unreadable: written incompletely, not acted on
    if plan is not None:
        # The journal is written only after every new archive is complete, so rolling
        # forward is always right.
        for tmp, final in plan["replace"]:
            with contextlib.suppress(FileNotFoundError):
                os.replace(os.path.join(path, tmp), os.path.join(path, final))
        for name in plan["delete"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, name))
        os.unlink(journal)
    for entry in os.scandir(path):  # archives written before a crash, never journalled
        if entry.name.endswith(_TMP_SUFFIX) or entry.name == JOURNAL_FILE + ".tmp":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _compact(path: str, dead: dict[str, list[str]]) -> None:
    """Merge dead processes' files (``{type: [names]}``) into the type's archive file."""
    replace: list[tuple[str, str]] = []
    delete: list[str] = []
    for typ, names in dead.items():
        archive = f"{typ}_{ARCHIVE_PID}.db"
        totals: dict[str, float] = {}
        for name in [archive, *names]:
            try:
                rows = _read_file(os.path.join(path, name))
            except FileNotFoundError:
                continue
            for key, value, _ in rows:
                totals[key] = totals.get(key, 0.0) + value
        tmp = f"{typ}_{ARCHIVE_PID}{_TMP_SUFFIX}"
        out = MmapedDict(os.path.join(path, tmp))
        try:
            for key, value in totals.items():
                out.write_value(key, value, 0.0)
            flush_mmaped(out)
        finally:
            out.close()
        replace.append((tmp, archive))
        delete.extend(names)
    journal = os.path.join(path, JOURNAL_FILE)
    with open(journal + ".tmp", "w") as file:
        json.dump({"replace": replace, "delete": delete}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(journal + ".tmp", journal)
    _recover(path)


def maintain_and_list(path: str) -> list[str]:
    """Sweep and compact dead processes' files; return the files to read. Call with the
    directory lock held."""
    _recover(path)
    alive: dict[str, bool] = {}
    dead: dict[str, list[str]] = {}
    files: list[str] = []
    for entry in os.scandir(path):
        parsed = _pid_of(entry.name)
        if parsed is None:
            continue
        typ, mode, pid = parsed
        state = alive.get(pid)
        if state is None:
            state = alive[pid] = not pid.isdigit() or is_alive(int(pid))
        if not state:
            if typ == "gauge" and mode.startswith("live"):
                # What mark_process_dead does: a dead worker's requests are not in flight.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                continue
            if typ in _SUMMED_TYPES:
                dead.setdefault(typ, []).append(entry.name)
                continue
        files.append(entry.name)
    if dead:
        _compact(path, dead)
        for typ in dead:
            archive = f"{typ}_{ARCHIVE_PID}.db"
            if archive not in files:
                files.append(archive)
    return [os.path.join(path, name) for name in files]


def read_metrics(files: Iterable[str]) -> list[Metric]:
    """Merge ``files`` like prometheus_client's ``MultiProcessCollector`` does, tolerating
    files that are not yet sized or that vanish (live gauges of a process just marked
    dead)."""
    metrics: dict[str, Metric] = {}
    key_cache: dict[str, tuple[str, str, dict[str, str], tuple[Any, ...], str]] = {}
    for file in files:
        parts = os.path.basename(file).split("_")
        typ = parts[0]
        try:
            rows = _read_file(file)
        except FileNotFoundError:
            continue
        for key, value, timestamp in rows:
            parsed = key_cache.get(key)
            if parsed is None:
                metric_name, name, labels, help_text = json.loads(key)
                parsed = key_cache[key] = (
                    metric_name, name, labels, tuple(sorted(labels.items())), help_text
                )
            metric_name, name, labels, labels_key, help_text = parsed
            metric = metrics.get(metric_name)
            if metric is None:
                metric = metrics[metric_name] = Metric(metric_name, help_text, typ)
            if typ == "gauge":
                set_multiprocess_mode(metric, parts[1])
                metric.add_sample(name, (*labels_key, ("pid", parts[2][:-3])),  # type: ignore[arg-type]
                                  value, timestamp)
            else:
                metric.add_sample(name, labels_key, value)  # type: ignore[arg-type]
    return list(accumulate_multiprocess(metrics))


def announce_derived_counter(
    path: str, counter_name: str, help_text: str, histogram_name: str
) -> None:
    """Record in the directory that ``counter_name`` (without ``_total``) is not written
    but derived from the ``_count`` of histogram ``histogram_name``, so that every process
    reading the directory derives it (:func:`collect_directory`).

    Every worker writes the same file: each writes a temporary file of its own and renames
    it into place, so a reader sees one complete version or another, never a mix.
    """
    final = os.path.join(path, f"{DERIVED_PREFIX}{counter_name}{DERIVED_SUFFIX}")
    tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as file:
            json.dump({"counter": counter_name, "help": help_text,
                       "histogram": histogram_name}, file)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def derived_counters(path: str) -> list[tuple[str, str, str]]:
    """The (counter name, help, histogram name) announced in the directory by
    :func:`announce_derived_counter`; unreadable files are skipped."""
    pairs = []
    for entry in os.scandir(path):
        name = entry.name
        if not (name.startswith(DERIVED_PREFIX) and name.endswith(DERIVED_SUFFIX)):
            continue
        try:
            with open(entry.path) as file:
                data = json.load(file)
            pairs.append((str(data["counter"]), str(data["help"]), str(data["histogram"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile (clean-up), or not ours
    return sorted(pairs)


def collect_directory(path: str, process_metrics: bool = False) -> list[Metric]:
    """Every metric in the multiprocess directory, summed over all workers, living and
    dead (sweeping and compacting dead workers' files on the way), and the counters
    derived from them (:func:`announce_derived_counter`), with the latest exemplar of
    every series and bucket from whichever worker recorded it
    (:mod:`asgi_metrics.multiprocess.exemplar_files`).

    With ``process_metrics``, also the process metrics of every live worker and of the
    server's master (:mod:`asgi_metrics.multiprocess.process_metrics`)."""
    return _collect(path, process_metrics, native=False)[0]


def _collect(
    path: str, process_metrics: bool, native: bool
) -> tuple[list[Metric], dict[str, dict[Key, NativeSeries]]]:
    """The directory's metrics and, with ``native``, its native histograms (else empty)."""
    natives: dict[str, dict[Key, NativeSeries]] = {}
    with _locked(path):
        # Also without ``native``: a server scraped only in text (a Prometheus without
        # native histograms) must not keep every dead worker's native file.
        compact_native(path, is_alive)
        if native:
            natives = read_native(path)
        files = maintain_and_list(path)
        metrics = read_metrics(files)
        if process_metrics:
            metrics.extend(_process_metrics(path, files))
        exemplars = _exemplars(path)
    counters = derived_counters(path)
    add_request_counters(metrics, counters)
    attach_exemplars(metrics, exemplars, counters)
    return metrics, natives


_exemplars_failed = False


def _exemplars(path: str) -> Any:
    """The directory's exemplars; a failure is logged once and shows none (the numbers
    are unaffected)."""
    global _exemplars_failed
    try:
        return collect_exemplars(path, is_alive)
    except Exception:
        if not _exemplars_failed:
            _exemplars_failed = True
            with contextlib.suppress(Exception):
                logger.exception("HTTP metrics: reading the workers' exemplars failed; the"
                                 " scrape shows none (logged once)")
        return {}


_process_metrics_failed = False


def _process_metrics(path: str, files: list[str]) -> list[Metric]:
    """The service's process metrics; a failure is logged once and shows none (the rest
    of the scrape is unaffected)."""
    global _process_metrics_failed
    try:
        return collect_processes(path, files)
    except Exception:
        if not _process_metrics_failed:
            _process_metrics_failed = True
            with contextlib.suppress(Exception):
                logger.exception("HTTP metrics: reading the workers' process metrics failed;"
                                 " the scrape shows none (logged once)")
        return []


def collect_directory_with_native(
    path: str, process_metrics: bool = False
) -> tuple[list[Metric], dict[str, dict[Key, NativeSeries]]]:
    """:func:`collect_directory`, and the native histograms of the directory by family
    name (:func:`~asgi_metrics.multiprocess.native_files.read_native`; turn them into a
    store's tables with :func:`~asgi_metrics.multiprocess.native_files.native_tables`, or
    into the protobuf encoder's lookup with
    :func:`~asgi_metrics.multiprocess.native_files.native_lookup`).

    The native files are read first: a worker writes a request into the classic
    histogram first, so a native series never counts a request its classic series does
    not, and at rest the two are equal.
    """
    return _collect(path, process_metrics, native=True)


class DirectoryCollector(Collector):
    """A collector for the multiprocess directory that is safe alongside compaction (use
    it instead of prometheus_client's ``MultiProcessCollector`` with this library).

    ``process_metrics`` (default: on, unless ``registry`` already has prometheus_client's
    ``ProcessCollector``, whose names they share): also show the process metrics of every
    live worker and the master."""

    def __init__(self, path: str | None = None, registry: CollectorRegistry | None = None,
                 process_metrics: bool | None = None):
        found = path or multiproc_dir()
        if not found or not os.path.isdir(found):
            raise ConfigurationError(f"{ENV_VAR} is not set or not a directory")
        self.path = found
        if process_metrics is None:
            process_metrics = registry is None or not any(
                isinstance(collector, ProcessCollector)
                for collector in registered_collectors(registry) or []
            )
        self.process_metrics = process_metrics
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterable[Metric]:
        return collect_directory(self.path, self.process_metrics)


def add_request_counters(metrics: list[Metric], pairs: Iterable[tuple[str, str, str]]) -> None:
    """Derive each request counter from its duration histogram's ``_count`` samples (the
    multiprocess store does not write it; see :mod:`asgi_metrics.multiprocess.store`).

    ``pairs`` are (counter name, counter help, histogram name). A counter already in
    ``metrics`` (derived before, e.g. by :func:`collect_directory`) is left as it is, so a
    counter is never derived twice.
    """
    by_name = {metric.name: metric for metric in metrics}
    for counter_name, help_text, histogram_name in pairs:
        if counter_name in by_name:
            continue
        counter = CounterMetricFamily(counter_name, help_text)
        histogram = by_name.get(histogram_name)
        if histogram is not None:
            for sample in histogram.samples:
                if sample.name == f"{histogram_name}_count":
                    counter.add_sample(f"{counter_name}_total", sample.labels, sample.value)
        metrics.append(counter)
        by_name[counter_name] = counter

"""Process metrics for the whole service in multiprocess mode: memory, CPU, open file
descriptors and start time of every live worker, and of the server's master process,
whichever process answers the scrape.

prometheus_client's ``ProcessCollector`` shows the process that answers a scrape, so under
several workers each scrape shows a different worker (the exposition leaves it out in
multiprocess mode). Here the scraping process reads Linux ``/proc`` of every live worker
instead; nothing runs on the request path.

Representation: one series per **worker slot**, label ``worker="0"`` ... ``"N-1"``, plus
``worker="master"`` for the server's master (gunicorn's arbiter, uvicorn's supervisor)
when the scrape can see it. A new worker takes the lowest free slot, so recycled and
killed workers reuse slots: the series stay as many as the most workers alive at once.
A slot's ``process_cpu_seconds_total`` is the CPU time of the worker in it now plus the
*retired* CPU time of every worker that was in it before, so it never goes down across
recycles. The gauges of a slot describe its current worker (absent while it has none).

Which processes are workers: the live PIDs named by the directory's files (every worker
that recorded anything) and the children of the master (also a worker that has served
nothing yet); multiprocessing's helper processes are not workers. The master is the
common parent of the workers, when it runs a known server (``gunicorn``, ``uvicorn``,
``granian``, ``hypercorn``).

Each worker's last known CPU time is kept in the directory (``asgi_metrics.processes.json``,
written by every scrape, under the directory lock). When a worker is found gone, its final
CPU time is the best known of: what gunicorn's arbiter measured when it reaped it
(:func:`note_exit`, called by :func:`~asgi_metrics.multiprocess.child_exit`; exact, also
after ``kill -9``), its zombie's ``/proc`` entry (exact), or the last value a scrape saw.
So without gunicorn's hook (``uvicorn --workers``) a killed worker loses at most the CPU
time it used since the last scrape of any worker.

Off Linux (no ``/proc``) nothing is shown, as prometheus_client's ``ProcessCollector``
shows nothing there either.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger("asgi_metrics")

#: Every file of this module's in the multiprocess directory starts with it (so that
#: ``clean_multiproc_dir`` removes them).
PROCESSES_PREFIX = "asgi_metrics.processes"
#: The slots' state, in the multiprocess directory.
STATE_FILE = f"{PROCESSES_PREFIX}.json"
#: ``asgi_metrics.processes.exit.<pid>.json``: a worker's final CPU time, from gunicorn's
#: arbiter (:func:`note_exit`), until the next scrape folds it into its slot.
EXIT_PREFIX = f"{PROCESSES_PREFIX}.exit."
WORKER_LABEL = "worker"
MASTER = "master"
#: How many gone workers' final CPU times are remembered, to correct them when gunicorn's
#: exact figure arrives after a scrape already retired the worker.
_REMEMBERED_EXITS = 64

_PROC = "/proc"
_PAGESIZE = resource.getpagesize()
try:
    _TICKS = float(os.sysconf("SC_CLK_TCK"))
except (ValueError, OSError, AttributeError):  # pragma: no cover - every Linux has it
    _TICKS = 100.0


def _boot_time() -> float | None:
    try:
        with open(os.path.join(_PROC, "stat"), "rb") as file:
            for line in file:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


_BTIME = _boot_time()


def available() -> bool:
    """Whether this platform has Linux ``/proc`` to read processes from."""
    return _BTIME is not None


# -- reading one process ---------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>`` says of one process, in prometheus_client's units."""

    pid: int
    ppid: int
    #: Zombie (exited, not yet reaped) or dead: its CPU time is final.
    exited: bool
    #: Start time in clock ticks since boot: with the PID, the process' identity.
    start_ticks: int
    cpu_seconds: float
    resident_bytes: float
    virtual_bytes: float
    open_fds: float | None
    max_fds: float | None

    @property
    def start_time(self) -> float:
        """Start time in seconds since the epoch, as prometheus_client computes it."""
        return self.start_ticks / _TICKS + (_BTIME or 0.0)


def read_process(pid: int) -> ProcStat | None:
    """``/proc/<pid>`` of one process, or ``None`` when it is gone (or unreadable).

    Fields as prometheus_client's ``ProcessCollector`` reads them: ``stat`` for CPU,
    memory and start time, ``fd`` and ``limits`` for file descriptors (``None`` each when
    not readable, e.g. another user's process)."""
    base = os.path.join(_PROC, str(pid))
    try:
        with open(os.path.join(base, "stat"), "rb") as file:
            raw = file.read()
        parts = raw[raw.rindex(b")") + 2:].split()
        state = parts[0]
        stat = (int(parts[1]), (float(parts[11]) + float(parts[12])) / _TICKS,
                int(parts[19]), float(parts[20]), float(parts[21]) * _PAGESIZE)
    except (OSError, ValueError, IndexError):
        return None
    open_fds: float | None = None
    max_fds: float | None = None
    with contextlib.suppress(OSError):
        open_fds = float(len(os.listdir(os.path.join(base, "fd"))))
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open(os.path.join(base, "limits"), "rb") as file:
        for line in file:
            if line.startswith(b"Max open files"):
                soft = line.split()[3]
                max_fds = float("inf") if soft == b"unlimited" else float(soft)
                break
    ppid, cpu, start, vsize, rss = stat
    return ProcStat(pid, ppid, state in (b"Z", b"X"), start, cpu, rss, vsize, open_fds,
                    max_fds)


# -- the slots: pure state, updated once per scrape ---------------------------------------


@dataclass
class Slot:
    """One ``worker`` label value and who is in it."""

    #: The current worker's identity (PID, start ticks), or ``None`` while empty.
    pid: int | None = None
    start: int | None = None
    #: The current worker's CPU seconds when last seen.
    cpu: float = 0.0
    #: CPU seconds of every earlier worker in this slot.
    retired: float = 0.0

    @property
    def total_cpu(self) -> float:
        """What ``process_cpu_seconds_total`` shows for this slot."""
        return round(self.retired + (self.cpu if self.pid is not None else 0.0), 6)


@dataclass
class Slots:
    """Every slot, and the final CPU time used for the last few workers retired."""

    slots: list[Slot] = field(default_factory=list)
    #: PID -> [slot index, final CPU seconds used] of recently retired workers.
    retired: dict[int, list[float]] = field(default_factory=dict)

    def occupant(self, identity: tuple[int, int]) -> Slot | None:
        """The slot whose current worker is ``identity`` (PID, start ticks), if any."""
        for slot in self.slots:
            if (slot.pid, slot.start) == identity:
                return slot
        return None

    def _free(self) -> Slot:
        for slot in self.slots:
            if slot.pid is None:
                return slot
        slot = Slot()
        self.slots.append(slot)
        return slot

    def advance(self, live: Mapping[tuple[int, int], float],
                finals: Mapping[int, float]) -> None:
        """One scrape's observations: ``live`` maps each live worker's (PID, start ticks)
        to its CPU seconds; ``finals`` maps the PID of a worker that has exited to its
        final CPU seconds (gunicorn's figure, or a zombie's).

        Every slot's :attr:`Slot.total_cpu` afterwards is at least what it was before."""
        finals = dict(finals)
        # Workers gone since the last scrape: their CPU time is retired into their slot.
        for index, slot in enumerate(self.slots):
            if slot.pid is None:
                continue
            seen = live.get((slot.pid, slot.start or 0))
            if seen is not None:
                slot.cpu = max(slot.cpu, seen)
                continue
            final = max(slot.cpu, finals.pop(slot.pid, 0.0))
            slot.retired += final
            self.retired[slot.pid] = [float(index), final]
            slot.pid, slot.start, slot.cpu = None, None, 0.0
        # A final figure for a worker retired earlier (from the last value a scrape saw):
        # add what it used after that. For one never seen: into the lowest free slot.
        for pid, final in finals.items():
            known = self.retired.get(pid)
            if known is not None:
                index, used = int(known[0]), known[1]
                if final > used and index < len(self.slots):
                    self.slots[index].retired += final - used
                    known[1] = final
            elif final > 0:
                self._free().retired += final
        # New workers take the lowest free slots.
        for (pid, start), cpu in sorted(live.items()):
            if self.occupant((pid, start)) is None:
                slot = self._free()
                slot.pid, slot.start, slot.cpu = pid, start, cpu
        while len(self.retired) > _REMEMBERED_EXITS:
            del self.retired[next(iter(self.retired))]

    def to_json(self) -> str:
        """The state as it is kept in the directory."""
        return json.dumps({
            "slots": [[s.pid, s.start, s.cpu, s.retired] for s in self.slots],
            "retired": [[pid, *entry] for pid, entry in self.retired.items()],
        })

    @classmethod
    def from_json(cls, text: str) -> Slots:
        """The state written by :meth:`to_json` (``ValueError`` etc. when damaged)."""
        data = json.loads(text)
        slots = [Slot(None if pid is None else int(pid), None if start is None else int(start),
                      float(cpu), float(retired))
                 for pid, start, cpu, retired in data["slots"]]
        retired = {int(pid): [float(index), float(final)]
                   for pid, index, final in data["retired"]}
        return cls(slots, retired)


# -- the directory's files ---------------------------------------------------------------


def _load(path: str) -> Slots:
    try:
        with open(os.path.join(path, STATE_FILE)) as file:
            return Slots.from_json(file.read())
    except FileNotFoundError:
        return Slots()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Damaged: start again (every slot's CPU counter restarts, which Prometheus reads
        # as a counter reset) rather than show nothing for ever.
        logger.warning("HTTP metrics: %s in %s is unreadable (%s); process metrics start"
                       " afresh.", STATE_FILE, path, exc)
        return Slots()


def _write_atomically(final: str, text: str) -> None:
    tmp = f"{final}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(tmp, "w") as file:
            file.write(text)
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _exits(path: str) -> tuple[dict[int, float], list[str]]:
    """Final CPU seconds per PID noted by :func:`note_exit`, and their files."""
    finals: dict[int, float] = {}
    names: list[str] = []
    for entry in os.scandir(path):
        if not (entry.name.startswith(EXIT_PREFIX) and entry.name.endswith(".json")):
            continue
        try:
            with open(entry.path) as file:
                data = json.load(file)
            pid, cpu = int(data["pid"]), float(data["cpu"])
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError):
            names.append(entry.name)  # damaged: dropped (the last seen value stands)
            continue
        finals[pid] = max(cpu, finals.get(pid, 0.0))
        names.append(entry.name)
    return finals, names


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# CPU seconds of this process' reaped children so far. In gunicorn's arbiter this module
# is imported with the config (``child_exit``), before any worker has exited.
_children_cpu_seen = [_children_cpu()]
_children_lock = threading.Lock()


def note_exit(path: str, pid: int) -> None:
    """In gunicorn's arbiter, just after it reaped worker ``pid`` (``child_exit``): note
    the worker's final CPU time in the directory, for the next scrape.

    The figure is how much the CPU time of this process' reaped children grew since the
    previous call: gunicorn reaps one worker, calls the hook, then reaps the next, so that
    is exactly this worker's (with any children it reaped itself; a child of the arbiter's
    that is not a worker, reaped meanwhile, is counted in too)."""
    with _children_lock:
        now = _children_cpu()
        cpu = max(0.0, now - _children_cpu_seen[0])
        _children_cpu_seen[0] = now
    _write_atomically(os.path.join(path, f"{EXIT_PREFIX}{pid}.json"),
                      json.dumps({"pid": pid, "cpu": cpu}))


# -- which processes are the service -----------------------------------------------------


def _pids_of(files: Iterable[str]) -> set[int]:
    """The PIDs in prometheus_client's file names (``counter_123.db``,
    ``gauge_livesum_123.db``); archives and other files have none."""
    pids = set()
    for file in files:
        name = os.path.basename(file)
        if name.endswith(".db"):
            tail = name[:-3].rsplit("_", 1)[-1]
            if tail.isdigit():
                pids.add(int(tail))
    return pids


def find_master(workers: Iterable[ProcStat]) -> int | None:
    """The server's master process: the common parent of ``workers`` (or, with none yet,
    this process' parent, or this process), when it runs a known server."""
    from asgi_metrics.multiprocess.workers import command_line, process_server, worker_children

    parents = Counter(stat.ppid for stat in workers)
    for pid, _ in parents.most_common():
        if pid > 1 and process_server(pid) is not None:
            return pid
    if parents:
        return None
    # No worker has recorded anything yet. This process is the master (a listener in
    # gunicorn's arbiter) if it runs a server and has children, and is not itself a forked
    # worker, whose command line is its parent's; else its parent may be.
    me, parent = os.getpid(), os.getppid()
    if (process_server(me) is not None and worker_children(me)
            and command_line(me) != command_line(parent)):
        return me
    return parent if parent > 1 and process_server(parent) is not None else None


# -- the scrape -----------------------------------------------------------------------


_HELP = {
    "virtual_memory_bytes": "Virtual memory size in bytes.",
    "resident_memory_bytes": "Resident memory size in bytes.",
    "start_time_seconds": "Start time of the process since unix epoch in seconds.",
    "cpu_seconds": "Total user and system CPU time spent in seconds.",
    "open_fds": "Number of open file descriptors.",
    "max_fds": "Maximum number of open file descriptors.",
}
_PER_WORKER = " Per worker slot (reused by the next worker) and the server's master."


def collect_processes(path: str, files: Iterable[str], prefix: str = "process_") -> list[Metric]:
    """The process metric families of every live worker and the master, updating the
    slots in ``path``. ``files`` are the directory's files being read at this scrape (their
    PIDs are workers). Call with the directory lock held (one scrape at a time updates the
    slots)."""
    if not available():
        return []
    from asgi_metrics.multiprocess.workers import worker_children

    stats: dict[int, ProcStat] = {}
    for pid in _pids_of(files):
        stat = read_process(pid)
        if stat is not None:
            stats[pid] = stat
    master = find_master(stat for stat in stats.values() if not stat.exited)
    master_stat = None
    if master is not None:
        for pid in worker_children(master):
            if pid not in stats:
                stat = read_process(pid)
                if stat is not None:
                    stats[pid] = stat
        stats.pop(master, None)
        master_stat = read_process(master)
    live = {pid: stat for pid, stat in stats.items() if not stat.exited}
    finals, exit_files = _exits(path)
    for stat in stats.values():
        if stat.exited:
            finals[stat.pid] = max(stat.cpu_seconds, finals.get(stat.pid, 0.0))
    slots = _load(path)
    slots.advance({(s.pid, s.start_ticks): s.cpu_seconds for s in live.values()}, finals)
    _write_atomically(os.path.join(path, STATE_FILE), slots.to_json())
    for name in exit_files:  # folded into the state just written
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))

    rows: list[tuple[str, ProcStat | None, float]] = []
    by_identity = {(s.pid, s.start_ticks): s for s in live.values()}
    for index, slot in enumerate(slots.slots):
        current = None if slot.pid is None else by_identity.get((slot.pid, slot.start or 0))
        rows.append((str(index), current, slot.total_cpu))
    if master_stat is not None and not master_stat.exited:
        rows.append((MASTER, master_stat, master_stat.cpu_seconds))
    return _families(prefix, rows)


def _families(prefix: str, rows: list[tuple[str, ProcStat | None, float]]) -> list[Metric]:
    def gauge(name: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(prefix + name, _HELP[name] + _PER_WORKER,
                                 labels=[WORKER_LABEL])

    vms, rss, start = gauge("virtual_memory_bytes"), gauge("resident_memory_bytes"), \
        gauge("start_time_seconds")
    cpu = CounterMetricFamily(prefix + "cpu_seconds", _HELP["cpu_seconds"] + _PER_WORKER,
                              labels=[WORKER_LABEL])
    open_fds, max_fds = gauge("open_fds"), gauge("max_fds")
    for worker, stat, total_cpu in rows:
        cpu.add_metric([worker], total_cpu)
        if stat is None:
            continue
        vms.add_metric([worker], stat.virtual_bytes)
        rss.add_metric([worker], stat.resident_bytes)
        start.add_metric([worker], stat.start_time)
        if stat.open_fds is not None:
            open_fds.add_metric([worker], stat.open_fds)
        if stat.max_fds is not None:
            max_fds.add_metric([worker], stat.max_fds)
    return [vms, rss, start, cpu, open_fds, max_fds]

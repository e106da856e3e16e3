"""Telling, without a shared directory, that several worker processes serve one app.

Each worker would then count and show only its own requests, so scrapes jump between
workers' numbers: :func:`warn_if_several_workers` says so once, loudly, at start-up. The
evidence comes from the servers' command lines and environment variables (gunicorn,
uvicorn, granian, hypercorn) and from the process tree (Linux ``/proc``). Heuristics: they
never raise and never stop the app.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import sysconfig
import warnings
from typing import Any

from asgi_metrics.multiprocess.directory import ENV_VAR

logger = logging.getLogger("asgi_metrics")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return [part.decode(errors="replace") for part in file.read().split(b"\0") if part]
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    """The PIDs of ``pid``'s children, started from any of its threads."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as file:
                found.extend(int(child) for child in file.read().split())
        except (OSError, ValueError):
            continue
    return found


#: Servers whose workers are processes. Each worker's parent is the server, started with
#: the server's command line; the worker's own ``sys.argv`` is that command line too
#: (gunicorn and granian fork; uvicorn and hypercorn use multiprocessing's spawn, which
#: hands the parent's ``sys.argv`` to the child).
_SERVERS = ("gunicorn", "uvicorn", "granian", "hypercorn")
#: multiprocessing's helper processes: children of a server that are not workers
#: (hypercorn's parent has a resource tracker next to its workers).
_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _server_of(argv: list[str]) -> str | None:
    text = " ".join(argv)
    for name in _SERVERS:
        if name in text:
            return name
    return None


def _threads_for_workers(server: str) -> bool:
    # granian built for free-threaded Python runs its workers as threads of one process,
    # where one process' numbers are the whole truth.
    return server == "granian" and bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def workers_flag(argv: list[str]) -> int | None:
    """The worker count given by ``-w N``, ``-wN``, ``--workers N`` or ``--workers=N`` in `argv`."""
    for index, arg in enumerate(argv):
        for flag in ("--workers", "-w"):
            if arg == flag and index + 1 < len(argv):
                value = argv[index + 1]
            elif arg.startswith(flag + "=") and flag.startswith("--"):
                value = arg[len(flag) + 1:]
            elif flag == "-w" and arg.startswith("-w") and arg[2:].isdigit():
                value = arg[2:]
            else:
                continue
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def detect_workers(environ: Any = None) -> tuple[int, str] | None:
    """A guess at how many worker processes serve this app, and the evidence, when this
    process looks like one of several workers of gunicorn, uvicorn, granian or hypercorn;
    else ``None``.

    Heuristics, in order (Linux ``/proc`` for the parent's ones):

    * the parent (or this) process is ``gunicorn``/``uvicorn``/``granian``/``hypercorn``
      started with ``-w N``/``--workers N`` (``N > 1``);
    * ``GUNICORN_CMD_ARGS`` contains ``--workers N``/``-w N``;
    * ``GRANIAN_WORKERS`` is more than 1 under granian (when no ``--workers`` is given);
    * ``WEB_CONCURRENCY`` (gunicorn's and uvicorn's default worker count) is more than 1
      under one of those two servers;
    * the parent is one of these servers with more than one worker child (multiprocessing's
      helper processes are not counted). This one also sees a count set in a config file.
    """
    env = os.environ if environ is None else environ
    own = list(sys.argv)
    parent = _cmdline(os.getppid())
    flagged: set[str] = set()  # servers whose worker count is on the command line
    return (
        _from_command_lines(own, parent, flagged)
        or _from_environment(env, own, parent, flagged)
        or _from_process_tree(parent)
    )


def _from_command_lines(
    own: list[str], parent: list[str], flagged: set[str]
) -> tuple[int, str] | None:
    """``-w N``/``--workers N`` on the server's command line (the parent's, or this one)."""
    for argv, who in ((parent, "the parent process"), (own, "this process")):
        server = _server_of(argv)
        if server is None or _threads_for_workers(server):
            continue
        count = workers_flag(argv)
        if count is not None:
            flagged.add(server)
            if count > 1:
                return count, f"{who} runs {' '.join(argv[:6])!s}..."
    return None


def _from_environment(
    env: Any, own: list[str], parent: list[str], flagged: set[str]
) -> tuple[int, str] | None:
    """The servers' environment variables for the worker count."""
    heads = [*own[:2], *parent[:3]]
    gunicorn_or_uvicorn = "gunicorn" in sys.modules or any(
        "gunicorn" in arg or "uvicorn" in arg for arg in heads
    )
    gunicorn_args = env.get("GUNICORN_CMD_ARGS", "")
    count = workers_flag(gunicorn_args.split())
    if count is not None and count > 1:
        return count, f"GUNICORN_CMD_ARGS={gunicorn_args!r}"
    granian_workers = str(env.get("GRANIAN_WORKERS", "")).strip()
    if (
        "granian" not in flagged
        and ("granian" in sys.modules or any("granian" in arg for arg in heads))
        and not _threads_for_workers("granian")
        and granian_workers.isdigit() and int(granian_workers) > 1
    ):
        return int(granian_workers), f"GRANIAN_WORKERS={granian_workers}"
    concurrency = env.get("WEB_CONCURRENCY", "")
    if gunicorn_or_uvicorn and concurrency.isdigit() and int(concurrency) > 1:
        return int(concurrency), f"WEB_CONCURRENCY={concurrency}"
    return None


def _from_process_tree(parent: list[str]) -> tuple[int, str] | None:
    """A server parent with more than one worker child (multiprocessing's helper
    processes are not counted): also sees a count set in a config file."""
    parent_text = " ".join(parent[:4])
    parent_server = _server_of(parent[:4])
    if (parent_server is not None and not _threads_for_workers(parent_server)) or (
        "multiprocessing" in parent_text and "uvicorn" in sys.modules
    ):
        siblings = sum(
            1 for child in _children(os.getppid())
            if not any(helper in " ".join(_cmdline(child)[:4]) for helper in _HELPERS)
        )
        if siblings > 1:
            return siblings, (
                f"the parent process ({parent_text}) has {siblings} worker children"
            )
    return None


_several_workers_warned = False


def warn_if_several_workers(environ: Any = None) -> None:
    """Warn (once per process) when several workers seem to serve this app without
    ``PROMETHEUS_MULTIPROC_DIR``: each would show only its own numbers."""
    global _several_workers_warned
    if _several_workers_warned:
        return
    try:
        found = detect_workers(environ)
    except Exception:  # a heuristic must never stop the app
        return
    if found is None:
        return
    _several_workers_warned = True
    count, evidence = found
    message = (
        f"HTTP metrics: this app seems to run in {count} worker processes ({evidence}), but"
        f" {ENV_VAR} is not set: each worker will count and show only its own requests, so"
        " scrapes jump between workers' numbers and counters seem to reset. Set"
        f" {ENV_VAR} to an empty directory in the server's environment (see the"
        " multiprocess section of the README), or run a single worker."
    )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def process_server(pid: int) -> str | None:
    """Which server (``gunicorn``, ``uvicorn``, ``granian``, ``hypercorn``) process ``pid``
    runs, from its command line (Linux ``/proc``), or ``None``."""
    return _server_of(_cmdline(pid)[:4])


def worker_children(pid: int) -> list[int]:
    """The children of ``pid`` that are not multiprocessing's helper processes: a server's
    workers (Linux ``/proc``; empty when unreadable)."""
    return [
        child for child in _children(pid)
        if not any(helper in " ".join(_cmdline(child)[:4]) for helper in _HELPERS)
    ]


def command_line(pid: int) -> list[str]:
    """The command line of process ``pid`` (Linux ``/proc``; empty when unreadable)."""
    return _cmdline(pid)

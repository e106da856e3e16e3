"""End-to-end benchmark: real servers on 127.0.0.1 driven by wrk.

uvicorn (1 worker) serving the Starlette variants on both of its stacks (pure Python
asyncio + h11, and uvloop + httptools as ``uvicorn[standard]`` installs), and gunicorn (1
sync worker) serving the Flask variants; ``wrk -t1 -c16 --latency``. Every (server, variant)
runs once per round, in a shuffled order per round. Servers are child processes, always
terminated.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HIT_PATH = "/users/42"
DEFAULT_ASGI_PEER = "starlette-exporter"
#: Always measured on both uvicorn stacks: the peer the e2e target is stated against.
ASGI_TARGET_PEER = "prometheus-fastapi-instrumentator"
NOOP = "no-op ASGI wrapper"
#: uvicorn's stacks: name -> (--loop, --http, modules they need).
UVICORN_STACKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "asyncio+h11": ("asyncio", "h11", ("h11",)),
    "uvloop+httptools": ("uvloop", "httptools", ("uvloop", "httptools")),
}

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_cmd(server: str, port: int) -> list[str]:
    """``server`` is ``gunicorn`` or ``uvicorn <stack>`` (a key of UVICORN_STACKS)."""
    if server.startswith("uvicorn"):
        loop, http, _ = UVICORN_STACKS[server.split(" ", 1)[1]]
        return [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serve:asgi_app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--loop", loop, "--http", http, "--log-level", "warning", "--no-access-log"]
    return [sys.executable, "-m", "gunicorn", "benchmarks.serve:wsgi_app()",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--log-level", "warning"]


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", HIT_PATH)
            status = conn.getresponse().status
            conn.close()
        except OSError:
            time.sleep(0.1)
            continue
        if status != 200:
            raise RuntimeError(f"GET {HIT_PATH} returned {status}")
        return
    raise RuntimeError("server did not become ready")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time so far of process ``pid`` and its children (gunicorn serves
    from a worker process), from Linux ``/proc``; None elsewhere."""
    total = 0.0
    try:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(entry) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total


@contextmanager
def server(kind: str, variant: str) -> Iterator[tuple[int, int]]:
    """Start ``kind`` serving ``variant``, wait until it answers; yields (port, pid)."""
    port = free_port()
    env = dict(os.environ, BENCH_VARIANT=variant)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        _server_cmd(kind, port), cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        try:
            _wait_ready(proc, port)
        except RuntimeError as exc:
            proc.terminate()
            err = (proc.communicate(timeout=10)[1] or b"").decode(errors="replace")
            tail = " | ".join(err.strip().splitlines()[-2:])
            raise RuntimeError(f"{exc}: {tail}") from None
        yield port, proc.pid
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:(.*)", output)
    if rps is None or p99 is None:
        raise ValueError(f"unparseable wrk output: {output[-300:]!r}")
    return {
        "requests_per_sec": float(rps.group(1)),
        "latency_p99_ms": _ms(p99.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_wrk(port: int, duration_s: int, pid: int | None = None) -> dict[str, Any]:
    """wrk against ``port``; with the server's ``pid``, also its CPU time per request."""
    cpu_before = None if pid is None else _cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{duration_s}s", "--latency",
         f"http://127.0.0.1:{port}{HIT_PATH}"],
        capture_output=True, text=True, timeout=duration_s + 60, check=True,
    ).stdout
    cpu_after = None if pid is None else _cpu_seconds(pid)
    result = parse_wrk(out)
    # The server's own CPU time per request: unlike requests/s, it does not move with how
    # much of the machine the server got, nor with what the client spent.
    total = re.search(r"(\d+) requests in", out)
    result["server_cpu_us"] = (
        round((cpu_after - cpu_before) / int(total.group(1)) * 1e6, 2)
        if cpu_before is not None and cpu_after is not None and total and int(total.group(1))
        else None
    )
    return result


def _bench(
    cells: list[tuple[str, str]], duration_s: int, rounds: int, warmup_s: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Run every (server, variant) cell once per round, in a shuffled order per round (a
    slow phase of the machine then hits all cells alike), and summarise per server."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {cell: [] for cell in cells}
    errors: dict[tuple[str, str], str] = {}
    rng = random.Random(seed)
    for _ in range(rounds):
        order = list(cells)
        rng.shuffle(order)
        for cell in order:
            if cell in errors:
                continue
            try:
                with server(*cell) as (port, pid):
                    if warmup_s:  # imports, caches, first label sets: not timed
                        run_wrk(port, warmup_s)
                    runs[cell].append(run_wrk(port, duration_s, pid))
            except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                errors[cell] = str(exc)[:300]
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(kind for kind, _ in cells):
        variants = [variant for k, variant in cells if k == kind]
        out[kind] = _summarise({v: runs[(kind, v)] for v in variants},
                               {v: errors[(kind, v)] for v in variants if (kind, v) in errors})
    return out


def _summarise(
    runs: dict[str, list[dict[str, Any]]], errors: dict[str, str]
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for variant, samples in runs.items():
        if variant in errors:
            rows[variant] = {"status": "error", "reason": errors[variant]}
            continue
        rps = statistics.median(r["requests_per_sec"] for r in samples)
        p99 = statistics.median(r["latency_p99_ms"] for r in samples)
        cpu = [r["server_cpu_us"] for r in samples if r.get("server_cpu_us") is not None]
        rows[variant] = {
            "status": "ok", "runs": samples,
            "requests_per_sec": round(rps, 1), "latency_p99_ms": round(p99, 3),
            "server_cpu_us": round(statistics.median(cpu), 2) if cpu else None,
        }
    # One worker serves requests one at a time, so 1e6/rps is its service time per request.
    bare = rows.get("bare", {})
    bare_rps = bare.get("requests_per_sec")
    for variant, row in rows.items():
        if not bare_rps or not row.get("requests_per_sec"):
            continue
        row["rps_vs_bare"] = round(row["requests_per_sec"] / bare_rps, 4)
        row["overhead_us"] = round(1e6 / row["requests_per_sec"] - 1e6 / bare_rps, 2)
        # The same from each round against bare's run of that round: cancels slow drift.
        paired = [1e6 / r["requests_per_sec"] - 1e6 / b["requests_per_sec"]
                  for r, b in zip(runs[variant], runs["bare"], strict=False)]
        row["paired_overhead_us"] = round(statistics.median(paired), 2) if paired else None
        if row.get("server_cpu_us") is not None and bare.get("server_cpu_us") is not None:
            row["server_cpu_overhead_us"] = round(
                row["server_cpu_us"] - bare["server_cpu_us"], 2)
    ours = rows.get("ours", {}).get("overhead_us")
    for row in rows.values():
        other = row.get("overhead_us")
        row["ours_over_this"] = (
            round(ours / other, 3) if ours is not None and other and other > 0 else None
        )
    return rows


def _importable(module: str, attr: str) -> bool:
    try:
        return hasattr(__import__(module), attr)
    except ImportError:
        return False


def _has_modules(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def run(
    duration_s: int, rounds: int, warmup_s: int, asgi_peer: str | None
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"error": "wrk not found on PATH"}
    peers = list(dict.fromkeys([ASGI_TARGET_PEER, asgi_peer or DEFAULT_ASGI_PEER]))
    ours_asgi = ["ours"] if _importable("asgi_metrics", "MetricsMiddleware") else []
    asgi = ["bare", NOOP, *ours_asgi, *peers]
    wsgi = ["bare"] + (["ours"] if _importable("wsgi_metrics", "MetricsMiddleware") else [])
    stacks = {name: _has_modules(spec[2]) for name, spec in UVICORN_STACKS.items()}
    cells = [(f"uvicorn {stack}", v) for stack, ok in stacks.items() if ok for v in asgi]
    cells += [("gunicorn", v) for v in [*wsgi, "prometheus-flask-exporter"]]
    servers = _bench(cells, duration_s, rounds, warmup_s)
    for stack, ok in stacks.items():
        if not ok:
            needs = ", ".join(UVICORN_STACKS[stack][2])
            servers[f"uvicorn {stack}"] = {"skipped": f"needs {needs}"}
    return {
        "params": {"wrk": f"-t1 -c16 -d{duration_s}s --latency", "rounds": rounds,
                   "warmup_s": warmup_s,
                   "path": HIT_PATH, "asgi_peers": peers,
                   "servers": [f"uvicorn {stack}" for stack in UVICORN_STACKS] + ["gunicorn"]},
        **servers,
    }

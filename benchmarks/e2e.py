"""End-to-end benchmark: real servers on 127.0.0.1 driven by wrk.

uvicorn (1 worker) serving the Starlette variants and gunicorn (1 sync worker) serving the
Flask variants; ``wrk -t1 -c16 --latency``. Servers are child processes, always terminated.
"""

from __future__ import annotations

import http.client
import os
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

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _server_cmd(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--factory", "benchmarks.serve:asgi_app",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--log-level", "warning", "--no-access-log"]
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


@contextmanager
def server(kind: str, variant: str) -> Iterator[int]:
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
        yield port
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


def run_wrk(port: int, duration_s: int) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{duration_s}s", "--latency",
         f"http://127.0.0.1:{port}{HIT_PATH}"],
        capture_output=True, text=True, timeout=duration_s + 60, check=True,
    ).stdout
    return parse_wrk(out)


def _bench(kind: str, variants: list[str], duration_s: int, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    errors: dict[str, str] = {}
    for _ in range(rounds):
        for variant in variants:
            if variant in errors:
                continue
            try:
                with server(kind, variant) as port:
                    runs[variant].append(run_wrk(port, duration_s))
            except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                errors[variant] = str(exc)[:300]
    rows: dict[str, Any] = {}
    for variant in variants:
        if variant in errors:
            rows[variant] = {"status": "error", "reason": errors[variant]}
            continue
        rps = statistics.median(r["requests_per_sec"] for r in runs[variant])
        p99 = statistics.median(r["latency_p99_ms"] for r in runs[variant])
        rows[variant] = {
            "status": "ok", "runs": runs[variant],
            "requests_per_sec": round(rps, 1), "latency_p99_ms": round(p99, 3),
        }
    # One worker serves requests one at a time, so 1e6/rps is its service time per request.
    bare = rows.get("bare", {}).get("requests_per_sec")
    for row in rows.values():
        if bare and row.get("requests_per_sec"):
            row["rps_vs_bare"] = round(row["requests_per_sec"] / bare, 4)
            row["overhead_us"] = round(1e6 / row["requests_per_sec"] - 1e6 / bare, 2)
    return rows


def _importable(module: str, attr: str) -> bool:
    try:
        return hasattr(__import__(module), attr)
    except ImportError:
        return False


def run(duration_s: int, rounds: int, asgi_peer: str | None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"error": "wrk not found on PATH"}
    peer = asgi_peer or DEFAULT_ASGI_PEER
    asgi = ["bare"] + (["ours"] if _importable("asgi_metrics", "MetricsMiddleware") else [])
    wsgi = ["bare"] + (["ours"] if _importable("wsgi_metrics", "MetricsMiddleware") else [])
    return {
        "params": {"wrk": f"-t1 -c16 -d{duration_s}s --latency", "rounds": rounds,
                   "path": HIT_PATH, "asgi_peer": peer},
        "uvicorn": _bench("uvicorn", [*asgi, peer], duration_s, rounds),
        "gunicorn": _bench("gunicorn", [*wsgi, "prometheus-flask-exporter"], duration_s, rounds),
    }

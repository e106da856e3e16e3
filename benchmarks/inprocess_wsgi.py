"""In-process WSGI benchmark: Flask variants here, Django variants in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks._harness import counted, interleave, options_added, prepare, summarise
from benchmarks._wsgi_driver import HIT_PATH, check, drive, make_runner
from benchmarks.wsgi_variants import OPTION_PAIRS, VARIANTS, make_flask

REPO_ROOT = Path(__file__).resolve().parent.parent


def verify_ours(n: int = 25) -> str:
    """Our Flask middleware must really count what it is timed on: drive ``n`` requests and
    read the counter back from its registry."""
    try:
        from wsgi_metrics import MetricsMiddleware
    except ImportError:
        return "skipped: wsgi_metrics.MetricsMiddleware not importable"
    registry = CollectorRegistry()
    app = make_flask()
    app.wsgi_app = MetricsMiddleware(app.wsgi_app, registry=registry)  # type: ignore[method-assign]
    drive(app, n)
    return counted(registry, "/users/<int:user_id>", n)


def run_flask(n: int, repeats: int, warmup: int) -> dict[str, Any]:
    variants = [(v.name, v.kind, v.build) for v in VARIANTS]
    runners, outcomes = prepare(variants, check, make_runner, warmup)
    interleave(runners, outcomes, n, repeats)
    result = summarise(outcomes, "bare")
    result["options_added_us"] = options_added(outcomes, OPTION_PAIRS)
    result["ours_counts_verified"] = verify_ours()
    result["params"] = {"n_per_batch": n, "repeats": repeats, "warmup": warmup, "path": HIT_PATH}
    return result


def run_django(n: int, repeats: int, warmup: int) -> dict[str, Any]:
    """Run benchmarks.django_bench in a fresh interpreter (Django settings are per process)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.django_bench", str(n), str(repeats), str(warmup)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"django_bench exited {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result

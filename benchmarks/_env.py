"""Machine, Python and package versions recorded with every result."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any

PACKAGES = (
    "prometheus_client",
    "starlette",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "h11",
    "gunicorn",
    "flask",
    "werkzeug",
    "django",
    "asgiref",
    "anyio",
    "opentelemetry-api",
    "opentelemetry-sdk",
    "prometheus-fastapi-instrumentator",
    "starlette-exporter",
    "starlette-prometheus",
    "opentelemetry-instrumentation-asgi",
    "prometheus-flask-exporter",
    "django-prometheus",
    "opentelemetry-instrumentation-wsgi",
    "matplotlib",
)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    try:
        return int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        return os.cpu_count() or 0


def git_revision() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "nproc": nproc(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "git_revision": git_revision(),
        "packages": package_versions(),
    }

"""Shared fixtures, and the ``e2e`` marker on every test under ``tests/e2e/``.

The layers: ``unit/`` (the framework-agnostic parts), ``adapters/<asgi|wsgi|flask|django>/``
(through a real framework, in process), ``e2e/`` (real servers and other programs:
uvicorn, gunicorn, granian, hypercorn, daphne, waitress, Werkzeug's server, Prometheus,
promtool; the soak, the floods, several processes sharing a multiprocess directory).
Helpers and test apps live in ``support/``. ``pytest -m "not e2e"`` runs the fast layers alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # By path, so a test cannot be in e2e/ without the marker (nor have it elsewhere by
    # accident): the directory is the one place that decides.
    for item in items:
        if E2E in item.path.resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_metrics_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_METRICS_* variables of the environment running the tests must not leak in."""
    for key in list(os.environ):
        if key.startswith("HTTP_METRICS_"):
            monkeypatch.delenv(key)

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _no_metrics_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_METRICS_* variables of the environment running the tests must not leak in."""
    for key in list(os.environ):
        if key.startswith("HTTP_METRICS_"):
            monkeypatch.delenv(key)

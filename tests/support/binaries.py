"""Locate external binaries (prometheus, promtool) for tests.

Rule: when a binary is missing, the test is skipped -- unless the ``CI``
environment variable is set (to any non-empty value), in which case the test
fails, so a CI machine without the tool cannot silently skip the checks.
"""

from __future__ import annotations

import os
import shutil

import pytest


def running_in_ci() -> bool:
    """True when the ``CI`` environment variable is set to a non-empty value."""
    return bool(os.environ.get("CI"))


def require_binary(name: str, env_var: str | None = None) -> str:
    """Return the absolute path of ``name``, or skip / fail the current test.

    ``env_var`` (e.g. ``PROMETHEUS_BIN``) may hold an explicit path that wins
    over the ``PATH`` lookup.
    """
    candidate = os.environ.get(env_var) if env_var else None
    path = shutil.which(candidate or name)
    if path is not None:
        return path
    where = f"{env_var}={candidate!r}" if candidate else "PATH"
    reason = f"{name!r} binary not found on {where} (Debian: apt-get install prometheus)"
    if running_in_ci():
        pytest.fail(f"{reason}; it is required when CI is set", pytrace=False)
    pytest.skip(reason)

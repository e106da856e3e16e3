"""Helpers around Prometheus' ``promtool`` for tests.

``check_metrics`` lints exposition text with ``promtool check metrics``;
``run_promtool`` runs any other promtool sub-command.  When the binary is
missing the calling test is skipped, or fails if ``CI`` is set.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.support.binaries import require_binary

DEFAULT_TIMEOUT = 60.0


def promtool_path() -> str:
    """Absolute path of promtool (``PROMTOOL_BIN`` overrides ``PATH``); skips/fails if absent."""
    return require_binary("promtool", "PROMTOOL_BIN")


def run_promtool(
    args: Sequence[str | Path],
    *,
    stdin: bytes | None = None,
    cwd: str | Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool *args`` and return the completed process (never raises on exit code)."""
    proc = subprocess.run(
        [promtool_path(), *map(str, args)],
        input=stdin if stdin is not None else b"",
        cwd=cwd,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )


def assert_promtool_ok(
    args: Sequence[str | Path], *, cwd: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT
) -> str:
    """Run promtool and raise AssertionError with its output unless it exits 0.

    Returns the combined output on success.
    """
    proc = run_promtool(args, cwd=cwd, timeout=timeout)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise AssertionError(
            f"promtool {' '.join(map(str, args))} exited {proc.returncode}:\n{output}"
        )
    return output


def check_metrics(text: bytes | str) -> None:
    """Lint Prometheus exposition text with ``promtool check metrics``.

    promtool prints one line per finding (to stdout or stderr, depending on the
    version) and exits non-zero on problems.  Any output line, or a non-zero
    exit status, is treated as a finding and raises AssertionError carrying
    promtool's output.
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    proc = run_promtool(["check", "metrics"], stdin=data)
    findings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    if findings or proc.returncode != 0:
        details = "\n".join(findings) or "(no output)"
        raise AssertionError(
            f"promtool check metrics reported problems (exit {proc.returncode}):\n{details}"
        )


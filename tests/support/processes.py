"""Run a fresh Python: a new interpreter with the repository on its path, for what needs
a fresh prometheus_client import (its value class is chosen at import time)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.support.paths import ROOT


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    full_env.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env,
                          capture_output=True, text=True, timeout=60, cwd=ROOT)

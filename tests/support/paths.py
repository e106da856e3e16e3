"""Where things are: the repository root (the working directory of every subprocess the
tests start, and what they put on ``PYTHONPATH``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

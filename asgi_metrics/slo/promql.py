"""Small PromQL builders shared by the rules and the dashboard: string literals, label
matchers, selectors and numbers written exactly."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal


def string(value: str) -> str:
    """``value`` as a PromQL double-quoted string literal (route templates may hold any
    character)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def equal(label: str, value: str) -> str:
    """The matcher ``label="value"``."""
    return f"{label}={string(value)}"


def selector(metric: str, matchers: Iterable[str] = ()) -> str:
    """``metric{m1, m2}``, or the bare name without matchers."""
    inside = ", ".join(matchers)
    return f"{metric}{{{inside}}}" if inside else metric


def number(value: Decimal) -> str:
    """A decimal number as a PromQL literal, without float noise or exponent
    (``0.0144``, not ``0.014400000000000001``)."""
    return format(value.normalize(), "f")

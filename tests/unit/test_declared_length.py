"""The declared ``Content-Length`` a request size is taken from: digits only, else
nothing is declared."""

from __future__ import annotations

import pytest

from asgi_metrics.core.rules import declared_length as declared_body_size


@pytest.mark.parametrize(
    ("value", "size"),
    [("9", 9), (b"9", 9), (" 12 ", 12), ("0", 0), ("007", 7), (None, None), ("", None),
     ("-1", None), ("+9", None), ("9_0", None), ("9.0", None), ("abc", None),
     ("\u0669", None), ("1" * 5000, None), (9, None)],
)
def test_declared_body_size(value: object, size: int | None) -> None:
    assert declared_body_size(value) == size

"""Correlation IDs in tests: invalid incoming IDs, and log records as a real handler with
:class:`CorrelationIdFilter` sees them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from asgi_metrics import CorrelationIdFilter


class Records(logging.Handler):
    """Collects records after :class:`CorrelationIdFilter` ran, as a real handler would
    format them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(CorrelationIdFilter())
        self.setFormatter(logging.Formatter("%(correlation_id)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def ids_of(self, message: str) -> list[str]:
        """The correlation IDs of the records with this message."""
        return [
            rec.correlation_id  # type: ignore[attr-defined]
            for rec in self.records
            if rec.getMessage() == message
        ]


@contextmanager
def captured_logs() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


#: Invalid incoming IDs as a WSGI server hands them over: header bytes decoded as latin-1.
INVALID_IDS = {
    "crlf": "abc\r\nSet-Cookie: x=1",
    "trailing-lf": "abc\n",
    "nel-x85": "abc\x85",
    "u2028-utf8": "abc\u2028".encode().decode("latin-1"),
    "nul": "ab\x00c",
    "space": "a b",
    "non-ascii": "caf\u00e9",
    "65-chars": "x" * 65,
    "empty": "",
    "slash": "a/b",
}

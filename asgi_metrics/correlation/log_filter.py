"""Putting the correlation ID on log records."""

from __future__ import annotations

import logging

from asgi_metrics.correlation.context import current_correlation_id


class CorrelationIdFilter(logging.Filter):
    """Sets ``record.correlation_id`` on every record (``default`` outside a request).

    Attach it to a *handler* (``handler.addFilter(CorrelationIdFilter())``), so records
    propagated from every logger get it; a filter on a logger only sees that logger's own
    records. Then use ``%(correlation_id)s`` in the format.
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        cid = current_correlation_id.get()
        record.correlation_id = self.default if cid is None else cid
        return True

"""Linking a request to its trace when correlation IDs are on: the sampled span current as
the request is recorded gets the correlation ID (attribute ``correlation.id``) and gives its
IDs for the exemplar. Shared by the ASGI, WSGI and Django middlewares, which look the span
up themselves (``sampled_span()``, inside their own fail-open handling): the no-span case,
on every request, stays one call.
"""

from __future__ import annotations

from typing import Any

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.correlation.ids import CORRELATION_ID_ATTRIBUTE
from asgi_metrics.otel.spans import SpanIds


def link_span(
    span: Any, cid: str | None, exemplar: bool, failures: FailureLog
) -> SpanIds | None:
    """Set ``cid`` (if given) on ``span``, a sampled span; return its (trace_id, span_id)
    when ``exemplar``, else ``None``. A failure to set the attribute is reported to
    ``failures``; reading the span's context may raise, as the lookup itself may."""
    if cid is not None:
        try:
            span.set_attribute(CORRELATION_ID_ATTRIBUTE, cid)
        except Exception as exc:
            failures.report("setting the correlation ID span attribute", exc)
    if not exemplar:
        return None
    context = span.get_span_context()
    return context.trace_id, context.span_id

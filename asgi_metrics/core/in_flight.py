"""The in-flight gauge by route (``in_flight_by_route``): which requests are in flight,
and under which route, resolved when the gauge is scraped.

A request is routed by its framework after it arrived, often long after (middleware,
authentication), and a request stuck in a view must show under that view's route while it
is stuck. So each adapter registers the request's own state (its ASGI exchange, its WSGI
route probe, its Django request) when it arrives and removes it when it is recorded; a
scrape asks each registered request for its route, read from what the framework's router
already decided (``scope["route"]``, the Flask request's ``url_rule``, Django's
``resolver_match``). Nothing is matched a second time, and the request path pays one dict
insert and one removal.
"""

from __future__ import annotations

from typing import Protocol

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.labels import UNMATCHED_ROUTE, UNTRACKED_ROUTE


class InFlightRequest(Protocol):
    """What a registered request offers the scrape."""

    method: str

    def in_flight_route(self) -> str | None:
        """The route template the framework chose so far, or ``None`` (not routed yet)."""
        ...


class InFlightRequests:
    """The requests in flight, by identity. Entering and leaving are single dict
    operations, atomic without a lock."""

    def __init__(self) -> None:
        self._requests: dict[int, InFlightRequest] = {}

    def enter(self, request: InFlightRequest) -> None:
        """``request`` arrived."""
        self._requests[id(request)] = request

    def leave(self, request: InFlightRequest) -> None:
        """``request`` is over (recorded, or never will be)."""
        self._requests.pop(id(request), None)

    def counts(self, failures: FailureLog) -> dict[tuple[str, str], int]:
        """``{(method, route): requests in flight}`` now; ``__unmatched__`` for a request
        not routed (yet), whatever ``count_unmatched`` says (it may still be). Routes marked
        ``do_not_track`` are left out."""
        counts: dict[tuple[str, str], int] = {}
        for request in list(self._requests.values()):  # one C call: a consistent copy
            try:
                route = request.in_flight_route()
            except Exception as exc:
                failures.report("route lookup (in flight)", exc)
                route = None
            if not isinstance(route, str):
                route = UNMATCHED_ROUTE
            if route is UNTRACKED_ROUTE:
                continue
            key = (request.method, route)
            counts[key] = counts.get(key, 0) + 1
        return counts

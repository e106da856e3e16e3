"""The per-route opt-out: :func:`do_not_track` marks a view, and the route lookups, when
they read a framework's route table, turn a marked view's route into
:data:`~asgi_metrics.core.labels.UNTRACKED_ROUTE`, which the recorder serves and never
records."""

from __future__ import annotations

from typing import TypeVar

_View = TypeVar("_View")

#: The attribute :func:`do_not_track` sets (copied by ``functools.wraps`` decorators).
MARK = "__http_metrics_do_not_track__"


def do_not_track(view: _View) -> _View:
    """Serve this view's route without recording it: a FastAPI/Starlette endpoint (function
    or ``HTTPEndpoint`` class), a Flask view (function or ``View`` class), a Django view
    (function or class-based), in either decorator order with the framework's own."""
    setattr(view, MARK, True)
    return view


def untracked(view: object) -> bool:
    """Whether ``view`` (or the class a class-based view was made from) is marked."""
    if view is None:
        return False
    if getattr(view, MARK, False) is True:
        return True
    # Flask's View.as_view() and Django's View.as_view() keep their class here.
    return getattr(getattr(view, "view_class", None), MARK, False) is True

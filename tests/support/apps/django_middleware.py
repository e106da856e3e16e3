"""Test-only Django middleware, importable by dotted path from MIDDLEWARE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RaisingMiddleware:
    """Raises before the URL resolver runs: an unhandled exception outside any view."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if request.path_info.startswith("/api/items/"):
            raise LookupError("middleware failure")
        return self.get_response(request)

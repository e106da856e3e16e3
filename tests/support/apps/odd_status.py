"""A raw ASGI app answering the status named in its path (``/404``), valid or not
(``/600``, ``/abc``): statuses no router limits."""

from __future__ import annotations

from typing import Any


async def odd_status_app(scope: Any, receive: Any, send: Any) -> None:
    """A raw ASGI app answering the status named in its path, valid or not."""
    raw = scope["path"].lstrip("/")
    status: Any = int(raw) if raw.lstrip("-").isdigit() else raw
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})

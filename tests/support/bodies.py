"""The request body the request size tests send, whole (declared) and in chunks, and
how to read its request size histogram back."""

from __future__ import annotations

from typing import Any

BODY = b"ab\ncd\nefg"  # 9 bytes, three lines
CHUNKS = [b"ab\nc", b"d\nef", b"g"]
SIZE_SUM = "http_request_size_bytes_sum"
SIZE_COUNT = "http_request_size_bytes_count"


def post_labels(route: str) -> dict[str, str]:
    return {"method": "POST", "route": route, "status": "200"}


def size_of(samples: Any, route: str) -> tuple[float, float]:
    """(sum, count) of the request size histogram of ``POST route`` in ``samples`` (a
    :data:`tests.support.scrape.Samples`)."""
    key = frozenset(post_labels(route).items())
    return samples.get((SIZE_SUM, key), 0.0), samples.get((SIZE_COUNT, key), 0.0)

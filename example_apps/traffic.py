"""Bounded demo traffic against an example app on 127.0.0.1."""

from __future__ import annotations

import http.client
import random
import threading
import time

DEFAULT_PATHS = [
    ("GET", "/api/v1/users/1"),
    ("GET", "/api/v1/users/42"),
    ("GET", "/api/v1/users/0"),
    ("POST", "/api/v1/users/"),
    ("GET", "/api/v1/orders/7/items/3"),
    ("GET", "/tenants/acme/items/9"),
    ("GET", "/report"),
    ("GET", "/boom"),
    ("GET", "/no/such/page"),
    ("DELETE", "/api/v1/users/1"),
    ("FOO", "/api/v1/users/1"),
]


def send(host: str, port: int, method: str, path: str) -> int:
    """One request; returns the status (0 when the server could not be reached)."""
    try:
        connection = http.client.HTTPConnection(host, port, timeout=5)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()
    except OSError:
        return 0


def run(
    host: str,
    port: int,
    paths: list[tuple[str, str]] | None = None,
    burst: int = 60,
    trickle_seconds: float = 600.0,
    stop: threading.Event | None = None,
) -> None:
    """A burst of ``burst`` requests, then about one a second for ``trickle_seconds``."""
    paths = paths or DEFAULT_PATHS
    stop = stop or threading.Event()
    for _ in range(50):  # wait for the server, at most 5 s
        if send(host, port, "GET", "/healthz") or stop.wait(0.1):
            break
    for index in range(burst):
        method, path = paths[index % len(paths)]
        send(host, port, method, path)
    deadline = time.monotonic() + trickle_seconds
    while time.monotonic() < deadline and not stop.wait(1.0):
        send(host, port, *random.choice(paths))


def start_in_background(host: str, port: int, **kwargs: object) -> threading.Event:
    """Start :func:`run` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run, args=(host, port), kwargs={**kwargs, "stop": stop}, daemon=True
    )
    thread.start()
    return stop

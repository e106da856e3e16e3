"""Our Litestar overhead against Litestar's built-in Prometheus plugin.

Each variant is awaited the way an ASGI server calls it (scope, receive, send), in one
event loop, in-process, timed with ``time.thread_time()`` (CPU time of this thread, so
other processes on a noisy machine count less). Variants: the bare app, ours
(``MetricsMiddleware(Litestar(...))``) and the peer (``litestar.plugins.prometheus``,
``PrometheusConfig(group_path=True).middleware`` in ``middleware=[...]``, so it labels by
template as we do). They run interleaved in many short rounds, in a rotating order;
reported are medians over rounds, the paired overhead against the bare app (same round)
and our overhead divided by the peer's. Needs only Litestar (not in the benchmark venv's
requirements; the test venv has it):

    .venv/bin/python benchmarks/litestar_peer_quick.py [requests per round] [rounds]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from time import thread_time
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

Message = MutableMapping[str, Any]
App = Callable[..., Awaitable[None]]
PATH = "/users/7"
SCOPE: dict[str, Any] = {
    "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
    "http_version": "1.1", "method": "GET", "scheme": "http", "path": PATH,
    "raw_path": PATH.encode(), "query_string": b"", "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
}


class Receive:
    """One ``http.request``, then ``http.disconnect`` (as uvicorn after the response)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    async def __call__(self) -> Message:
        if self.done:
            return {"type": "http.disconnect"}
        self.done = True
        return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Message) -> None:
    return None


async def batch(app: App, n: int) -> float:
    begin = thread_time()
    for _ in range(n):
        await app(dict(SCOPE), Receive(), discard)
    return (thread_time() - begin) / n * 1e6


async def status_of(app: App) -> int:
    sent: list[Message] = []

    async def record(message: Message) -> None:
        sent.append(message)

    await app(dict(SCOPE), Receive(), record)
    return int(next(m["status"] for m in sent if m["type"] == "http.response.start"))


def variants() -> dict[str, App]:
    from litestar import Litestar, Request, get
    from litestar.plugins.prometheus import PrometheusConfig

    from asgi_metrics import MetricsMiddleware

    @get("/users/{user_id:int}")
    async def user(request: Request[Any, Any, Any]) -> str:
        return "ok"

    def build(**kwargs: Any) -> Litestar:
        return Litestar(route_handlers=[user], openapi_config=None, **kwargs)

    peer = PrometheusConfig(app_name="bench", group_path=True)
    return {
        "bare": build(),
        "ours": MetricsMiddleware(build(), registry=CollectorRegistry()),
        "peer": build(middleware=[peer.middleware]),
    }


async def run(n: int, rounds: int) -> None:
    apps = variants()
    for name, app in apps.items():
        status = await status_of(app)
        assert status == 200, (name, status)
        await batch(app, n)  # warm up
    names = list(apps)
    times: dict[str, list[float]] = {name: [] for name in names}
    paired: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        round_times = {name: await batch(apps[name], n) for name in order}
        for name in names:
            times[name].append(round_times[name])
            paired[name].append(round_times[name] - round_times["bare"])
    med = {name: statistics.median(values) for name, values in times.items()}
    over = {name: statistics.median(values) for name, values in paired.items()}
    line = "  ".join(f"{name} {med[name]:6.1f} us (+{over[name]:5.1f})" for name in names)
    print(f"litestar N={n} x {rounds}: {line}  ratio ours/peer {over['ours'] / over['peer']:.3f}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 21
    asyncio.run(run(n, rounds))


if __name__ == "__main__":
    main()

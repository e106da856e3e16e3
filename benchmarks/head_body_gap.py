"""How long a response stays half-written: the time between uvicorn's write of the response
head and its write of the body, per ASGI variant, through uvicorn's real HTTP protocol.

``python benchmarks/head_body_gap.py [httptools|h11] [requests] [rounds]``

uvicorn writes the head on ``http.response.start`` and the body on the last
``http.response.body``; the client starts reading at the head. Whatever a middleware does
in between keeps the client waiting for the rest (and wakes it twice), which under a real
server costs more than the work's own CPU time (see README, "Why e2e can cost more than
in-process"). No socket here: the protocol gets the request bytes directly and a transport
that only notes when ``write`` is called, so the numbers are repeatable on a busy machine.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
from pathlib import Path
from time import perf_counter
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.asgi_variants import BY_NAME, NOOP

REQUEST = b"GET /users/42 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
VARIANTS = ("bare", NOOP, "ours", "prometheus-fastapi-instrumentator")


class _Transport(asyncio.Transport):
    """Notes the time of each non-empty write (h11 also writes an empty end of message);
    discards the bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[float] = []
        self.closing = False

    def write(self, data: Any) -> None:
        if data:
            self.writes.append(perf_counter())

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        info = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return info.get(name, default)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def _gaps(protocol_class: Any, app: Any, n: int) -> list[float]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    config = Config(app=app, log_level="warning", access_log=False)
    config.load()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    gaps = []
    for _ in range(n):
        transport.writes.clear()
        protocol.data_received(REQUEST)
        for _ in range(100):  # the request task runs on the next loop iterations
            if len(transport.writes) >= 2:
                break
            await asyncio.sleep(0)
        if len(transport.writes) != 2:
            raise AssertionError(f"expected a head and a body write, got {transport.writes}")
        gaps.append((transport.writes[1] - transport.writes[0]) * 1e6)
        await asyncio.sleep(0)  # let the task finish (recording, done callbacks)
    protocol.connection_lost(None)
    return gaps


def main(argv: list[str]) -> int:
    http = argv[0] if argv else "httptools"
    n = int(argv[1]) if len(argv) > 1 else 1000
    rounds = int(argv[2]) if len(argv) > 2 else 5
    if http == "httptools":
        import uvloop
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as protocol

        loop = uvloop.new_event_loop()
    else:
        from uvicorn.protocols.http.h11_impl import H11Protocol as protocol

        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    apps = {name: BY_NAME[name].build(0) for name in VARIANTS}
    medians: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for app in apps.values():
        loop.run_until_complete(_gaps(protocol, app, 200))  # warm-up
    for _ in range(rounds):  # interleaved: a slow phase of the machine hits all alike
        for name, app in apps.items():
            gc.collect()
            medians[name].append(statistics.median(loop.run_until_complete(
                _gaps(protocol, app, n))))
    print(f"uvicorn {http}: head -> body write, median of {rounds} round medians"
          f" x {n} requests")
    for name, values in medians.items():
        print(f"  {name:36} {statistics.median(values):6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

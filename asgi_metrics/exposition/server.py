"""A separate listener for the metrics: ``/metrics`` on its own address and port.

The recommended production set-up: the public app serves no metrics at all
(``metrics_path=None``) and Prometheus scrapes this listener, bound to loopback or an
internal interface. It is a small threaded stdlib HTTP server in a daemon thread,
answering through the same :class:`~asgi_metrics.exposition.scrape.Exposition` as the
middleware's endpoint (fast renderer, gzip, format negotiation, credentials, bounded
concurrent scrapes), so whatever the exposition learns (multiprocess aggregation) the
listener serves too.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from asgi_metrics.core.settings import Settings
from asgi_metrics.exposition.auth import MetricsAuth
from asgi_metrics.exposition.scrape import Exposition


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in progress never keeps the process alive
    exposition: Exposition
    path: str


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "http-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        if self.path.split("?", 1)[0] != self.server.path:
            status, headers, body = 404, [("Content-Type", "text/plain; charset=utf-8")], b""
            body = b"Not Found"
            headers.append(("Content-Length", str(len(body))))
        else:
            status, headers, body = self.server.exposition.respond(
                self.command,
                self.headers.get("Accept"),
                self.headers.get("Accept-Encoding"),
                self.headers.get("Authorization"),
            )
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: one line per scrape is noise, and request lines must never reach logs
        # next to credentials.
        pass


class MetricsServer:
    """A running metrics listener. ``port`` is the bound port (useful with port 0).

    Use :meth:`close` (or ``with``) to stop it.
    """

    def __init__(self, server: _Server, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        address = server.server_address
        self.addr: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        """The metrics URL, e.g. ``http://127.0.0.1:9100/metrics``."""
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}{self._server.path}"

    def close(self) -> None:
        """Stop accepting scrapes and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsServer({self.url!r})"


def start_metrics_server(
    port: int,
    addr: str = "127.0.0.1",
    registry: CollectorRegistry | None = None,
    *,
    path: str = "/metrics",
    bearer_token: str | None = None,
    basic_auth: tuple[str, str] | str | None = None,
    max_concurrent_scrapes: int | None = None,
) -> MetricsServer:
    """Serve ``registry`` (default: prometheus_client's ``REGISTRY``, with every middleware
    store registered there) at ``http://addr:port/metrics`` from a daemon thread.

    ``addr`` defaults to loopback: bind an internal interface on purpose, never by accident.
    ``port=0`` picks a free port (see :attr:`MetricsServer.port`). Credentials and the
    scrape limit default to the ``HTTP_METRICS_METRICS_BEARER_TOKEN``,
    ``HTTP_METRICS_METRICS_BASIC_AUTH`` and ``HTTP_METRICS_MAX_CONCURRENT_SCRAPES``
    environment variables, like the middleware's settings.
    """
    options: dict[str, Any] = {"metrics_path": path}
    for name, value in (
        ("metrics_bearer_token", bearer_token),
        ("metrics_basic_auth", basic_auth),
        ("max_concurrent_scrapes", max_concurrent_scrapes),
    ):
        if value is not None:
            options[name] = value
    settings = Settings.build(options)
    server_class = type(
        "_Server", (_Server,),
        {"address_family": socket.AF_INET6 if ":" in addr else socket.AF_INET},
    )
    server = server_class((addr, port), _Handler)
    server.exposition = Exposition(
        REGISTRY if registry is None else registry,
        auth=MetricsAuth.from_settings(settings),
        max_concurrent_scrapes=settings.max_concurrent_scrapes,
    )
    server.path = path
    thread = threading.Thread(
        target=server.serve_forever, name=f"metrics-server-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)

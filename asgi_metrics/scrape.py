"""Answering a scrape: content negotiation, rendering, compression.

Shared by the ASGI endpoint and the WSGI adapters, which only translate the request into
``(method, accept, accept_encoding)`` and the answer back into their protocol.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as generate_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from .collector import StoreCollector, iter_registered, others_only
from .exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from .multiprocess import (
    DirectoryCollector,
    MultiProcessCollector,
    add_request_counters,
    collect_directory,
    multiproc_dir,
)

Headers = list[tuple[str, str]]
#: gzip level for scrapes: level 1 is several times faster than 9 and the output is
#: still about 10x smaller than plain text.
GZIP_LEVEL = 1


def _media_ranges(header: str) -> list[tuple[str, dict[str, str]]]:
    ranges = []
    for part in header.split(","):
        media, *params = part.split(";")
        values: dict[str, str] = {}
        for param in params:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip().strip('"')
        ranges.append((media.strip().lower(), values))
    return ranges


def _q(params: dict[str, str]) -> float:
    try:
        return float(params.get("q", "1"))
    except ValueError:
        return 0.0


def wants_openmetrics(accept: str | None) -> bool:
    """True when the ``Accept`` header asks for OpenMetrics (1.0.0 or unversioned)."""
    if not accept or "openmetrics" not in accept:
        return False
    for media, params in _media_ranges(accept):
        if (
            media == "application/openmetrics-text"
            and _q(params) > 0
            and params.get("version", "1.0.0") in ("1.0.0", "0.0.1")
        ):
            return True
    return False


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when the ``Accept-Encoding`` header allows gzip."""
    if not accept_encoding or "gzip" not in accept_encoding:
        return False
    return any(
        media == "gzip" and _q(params) > 0 for media, params in _media_ranges(accept_encoding)
    )


class Exposition:
    """Renders a registry's metrics, our stores through the fast renderer.

    With ``own`` given (a middleware's endpoint), that store is shown and every other
    store of ours in the registry is left out; without it (a standalone endpoint), every
    store currently registered is shown.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set when this is built) the
    directory is shown instead, summed over every worker, followed by the registry's other
    collectors (see :meth:`_render_multiprocess`).
    """

    def __init__(self, registry: CollectorRegistry, own: StoreCollector | None = None) -> None:
        self.registry = registry
        self.own = own
        self.multiprocess_dir = multiproc_dir()

    def render(self, openmetrics: bool) -> bytes:
        if self.multiprocess_dir is not None:
            return self._render_multiprocess(openmetrics)
        stores = [self.own] if self.own is not None else list(iter_registered(self.registry))
        ours = "".join(store.render(openmetrics) for store in stores).encode("utf-8")
        with others_only():
            rest = (generate_openmetrics if openmetrics else generate_text)(self.registry)
        return ours + rest

    def _render_multiprocess(self, openmetrics: bool) -> bytes:
        """The directory's metrics (every worker's, ours and the app's own multiprocess
        metrics), then the registry's other collectors, minus what would be one worker's
        view of the same thing: families already shown from the directory, prometheus_client's
        process/platform/GC collectors (this worker's CPU and memory, a different worker's at
        every scrape) and any ``MultiProcessCollector`` registered there."""
        path = self.multiprocess_dir
        assert path is not None
        metrics = collect_directory(path)
        stores = [self.own] if self.own is not None else list(iter_registered(self.registry))
        add_request_counters(metrics, [
            (store.names.requests.name, store.names.requests.help, store.names.duration.name)
            for store in stores if store.names.requests is not None
        ])
        registry = self.registry
        per_worker = (
            prometheus_client.PROCESS_COLLECTOR,
            prometheus_client.PLATFORM_COLLECTOR,
            prometheus_client.GC_COLLECTOR,
        )

        class View:
            def collect(self) -> Iterator[Metric]:
                yield from metrics
                seen = {metric.name for metric in metrics}
                # The registry's collector list is private API; fall back to everything.
                table = getattr(registry, "_collector_to_names", None)
                lock = getattr(registry, "_lock", None)
                collectors: list[Any]
                if table is None or lock is None:
                    collectors = [registry]
                else:
                    with lock:
                        collectors = list(table)
                with others_only():
                    for collector in collectors:
                        if collector in per_worker or isinstance(
                            collector, (StoreCollector, MultiProcessCollector,
                                        DirectoryCollector)
                        ):
                            continue
                        for metric in collector.collect():
                            if metric.name not in seen:
                                seen.add(metric.name)
                                yield metric

        generate = generate_openmetrics if openmetrics else generate_text
        return generate(View())  # generate_latest only calls .collect()

    def respond(
        self, method: str, accept: str | None, accept_encoding: str | None
    ) -> tuple[int, Headers, bytes]:
        """Status, headers and body for a request to the metrics endpoint.

        The body is returned for HEAD too (its length is the Content-Length); the adapter
        leaves it out.
        """
        if method not in ("GET", "HEAD"):
            body = b"Method Not Allowed"
            return 405, [
                ("Allow", "GET, HEAD"),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
            ], body
        openmetrics = wants_openmetrics(accept)
        body = self.render(openmetrics)
        headers = [
            ("Content-Type", OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE),
            ("Vary", "Accept, Accept-Encoding"),
            ("Cache-Control", "no-store"),
        ]
        if accepts_gzip(accept_encoding):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        return 200, headers, body

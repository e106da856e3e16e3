"""Answering a scrape: content negotiation, rendering, compression.

Shared by the ASGI endpoint and the WSGI adapters, which only translate the request into
``(method, accept, accept_encoding)`` and the answer back into their protocol.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client import generate_latest as generate_text
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from asgi_metrics.compat import MultiProcessCollector, registered_collectors
from asgi_metrics.core.labels import Key
from asgi_metrics.core.native import NativeSeries
from asgi_metrics.core.self_metrics import SelfMetrics
from asgi_metrics.core.settings import DEFAULT_MAX_CONCURRENT_SCRAPES
from asgi_metrics.exposition.auth import Headers, MetricsAuth
from asgi_metrics.exposition.collector import StoreCollector, iter_registered, others_only
from asgi_metrics.exposition.negotiation import accepts_gzip, wants_openmetrics, wants_protobuf
from asgi_metrics.exposition.protobuf import PROTOBUF_CONTENT_TYPE, encode_registry
from asgi_metrics.exposition.render import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from asgi_metrics.multiprocess.directory import (
    DirectoryCollector,
    add_request_counters,
    collect_directory,
    collect_directory_with_native,
    multiproc_dir,
)
from asgi_metrics.multiprocess.native_files import native_lookup

#: (status, headers, body) of an answer to a scrape.
Answer = tuple[int, Headers, bytes]
#: gzip level for scrapes: level 1 is several times faster than 9 and the output is
#: still about 10x smaller than plain text.
GZIP_LEVEL = 1


@dataclass(frozen=True)
class ScrapeRequest:
    """What an allowed scrape asks for: the format and whether to gzip it (``protobuf``:
    the Prometheus protobuf format, whatever ``openmetrics`` says)."""

    openmetrics: bool
    gzip: bool
    protobuf: bool = False


class _Flight:
    """One rendering in progress, shared by every scrape that asks for the same thing."""

    __slots__ = ("body", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.body = b""
        self.error: BaseException | None = None


def _plain(status: int, text: str, extra: Headers | None = None) -> Answer:
    body = text.encode("utf-8")
    return status, [
        *(extra or []),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
    ], body


class Exposition:
    """Renders a registry's metrics, our stores through the fast renderer, and answers
    scrapes: access control, format negotiation, compression, and a bound on concurrent
    scrapes.

    With ``own`` given (a middleware's endpoint), that store is shown and every other
    store of ours in the registry is left out; without it (a standalone endpoint), every
    store currently registered is shown.

    At most ``max_concurrent_scrapes`` scrapes are answered at once; more get 503 with
    ``Retry-After``. Scrapes that ask for the same format at the same time share one
    rendering, so a scrape storm costs one rendering, not one per request.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set when this is built) the
    directory is shown instead, summed over every worker, followed by the registry's other
    collectors (see :meth:`_render_multiprocess`). Every adapter (ASGI endpoint, WSGI,
    Django, the separate listener) renders through :meth:`render`, so all of them do this.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        own: StoreCollector | None = None,
        *,
        auth: MetricsAuth | None = None,
        max_concurrent_scrapes: int = DEFAULT_MAX_CONCURRENT_SCRAPES,
        self_metrics: SelfMetrics | None = None,
    ) -> None:
        self.registry = registry
        #: Where scrapes and rendering times are counted (``None``: nowhere).
        self.self_metrics = self_metrics
        self.own = own
        self.auth = MetricsAuth() if auth is None else auth
        self.max_concurrent_scrapes = max_concurrent_scrapes
        self._lock = threading.Lock()  # guards the two below; never held while rendering
        self._active = 0
        self._flights: dict[ScrapeRequest, _Flight] = {}
        self.multiprocess_dir = multiproc_dir()

    def render(self, openmetrics: bool) -> bytes:
        """The exposition body, uncompressed (the one place every adapter renders)."""
        if self.multiprocess_dir is not None:
            return self._render_multiprocess(openmetrics)
        stores = [self.own] if self.own is not None else list(iter_registered(self.registry))
        ours = "".join(store.render(openmetrics) for store in stores).encode("utf-8")
        with others_only():
            rest = (generate_openmetrics if openmetrics else generate_text)(self.registry)
        return ours + rest

    def render_protobuf(self) -> bytes:
        """The exposition body in the Prometheus protobuf format: the same families as
        :meth:`render`, our histograms with their native fields when they have them."""
        if self.multiprocess_dir is not None:
            view, natives = self._multiprocess_view(with_native=True)
            lookup = native_lookup(natives, self.multiprocess_dir) if natives else None
            return encode_registry(view, lookup)
        stores = [self.own] if self.own is not None else list(iter_registered(self.registry))
        ours = b"".join(store.render_protobuf() for store in stores)
        with others_only():
            rest = encode_registry(self.registry)
        return ours + rest

    def _render_multiprocess(self, openmetrics: bool) -> bytes:
        generate = generate_openmetrics if openmetrics else generate_text
        # generate_latest only calls .collect()
        return generate(self._multiprocess_view()[0])

    def _multiprocess_view(
        self, with_native: bool = False
    ) -> tuple[Any, dict[str, dict[Key, NativeSeries]]]:
        """The directory's metrics (every worker's, ours and the app's own multiprocess
        metrics), then the registry's other collectors, minus what would be one worker's
        view of the same thing: families already shown from the directory, prometheus_client's
        process/platform/GC collectors (this worker's CPU and memory, a different worker's at
        every scrape) and any ``MultiProcessCollector`` registered there. Something with
        ``collect()``, read once; and, ``with_native``, the directory's native histograms
        by family name (else empty)."""
        path = self.multiprocess_dir
        assert path is not None
        # The directory's metrics include the counters every store announced there (the
        # same in any process, with or without a store of its own); this process' stores
        # are added in case one could not announce its counter. Each is derived once.
        natives: dict[str, dict[Key, NativeSeries]] = {}
        if with_native:
            metrics, natives = collect_directory_with_native(path, process_metrics=True)
        else:
            metrics = collect_directory(path, process_metrics=True)
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
                # Without the registry's collector list: everything, as one collector.
                collectors = registered_collectors(registry) or [registry]
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

        return View(), natives

    def body(self, request: ScrapeRequest) -> bytes:
        """Render (and compress, if asked) one answer's body. No sharing: see
        :meth:`shared_body`."""
        started = perf_counter()
        body = self.render_protobuf() if request.protobuf else self.render(request.openmetrics)
        if self.self_metrics is not None:
            self.self_metrics.observe_render(perf_counter() - started)
        if request.gzip:
            body = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
        return body

    def prepare(
        self,
        method: str,
        accept: str | None,
        accept_encoding: str | None,
        authorization: str | None = None,
    ) -> Answer | ScrapeRequest:
        """The cheap checks, in order: method (405), credentials (401). Returns the final
        answer when one of them fails, else what to render."""
        if method not in ("GET", "HEAD"):
            return _plain(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
        if not self.auth.allows(authorization):
            self._count("unauthorized")
            return _plain(401, "Unauthorized", self.auth.challenge())
        if wants_protobuf(accept):
            return ScrapeRequest(False, accepts_gzip(accept_encoding), protobuf=True)
        return ScrapeRequest(wants_openmetrics(accept), accepts_gzip(accept_encoding))

    def admit(self) -> bool:
        """Take one of the ``max_concurrent_scrapes`` slots; False when none is free (answer
        :meth:`busy`). Pair every True with :meth:`release`."""
        with self._lock:
            admitted = self._active < self.max_concurrent_scrapes
            if admitted:
                self._active += 1
        self._count("answered" if admitted else "rejected")
        return admitted

    def _count(self, result: str) -> None:
        if self.self_metrics is not None:
            self.self_metrics.count_scrape(result)

    def release(self) -> None:
        """Give back a slot taken by :meth:`admit`."""
        with self._lock:
            self._active -= 1

    @staticmethod
    def busy() -> Answer:
        """The answer when too many scrapes are in progress."""
        return _plain(503, "Too many concurrent scrapes", [("Retry-After", "1")])

    def shared_body(self, request: ScrapeRequest) -> bytes:
        """:meth:`body`, shared between threads: while one thread renders ``request``, other
        threads asking for the same wait for its result instead of rendering again."""
        with self._lock:
            flight = self._flights.get(request)
            leader = flight is None
            if flight is None:
                flight = self._flights[request] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise RuntimeError("the shared metrics rendering failed") from flight.error
            return flight.body
        try:
            flight.body = self.body(request)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            # Later scrapes render afresh: sharing is only among scrapes that overlap.
            with self._lock:
                del self._flights[request]
            flight.done.set()
        return flight.body

    @staticmethod
    def answer(request: ScrapeRequest, body: bytes) -> Answer:
        """Status and headers for a rendered body."""
        if request.protobuf:
            content_type = PROTOBUF_CONTENT_TYPE
        else:
            content_type = OPENMETRICS_CONTENT_TYPE if request.openmetrics else TEXT_CONTENT_TYPE
        headers = [
            ("Content-Type", content_type),
            ("Vary", "Accept, Accept-Encoding"),
            ("Cache-Control", "no-store"),
        ]
        if request.gzip:
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        return 200, headers, body

    def respond(
        self,
        method: str,
        accept: str | None,
        accept_encoding: str | None,
        authorization: str | None = None,
    ) -> Answer:
        """Status, headers and body for a request to the metrics endpoint, for threaded
        servers (WSGI, the separate listener). Blocks while rendering.

        The body is returned for HEAD too (its length is the Content-Length); the adapter
        leaves it out.
        """
        request = self.prepare(method, accept, accept_encoding, authorization)
        if not isinstance(request, ScrapeRequest):
            return request
        if not self.admit():
            return self.busy()
        try:
            body = self.shared_body(request)
        finally:
            self.release()
        return self.answer(request, body)

"""The framework-agnostic core: how one request is counted.

An adapter (ASGI, WSGI, Django) turns a request into plain values (method, route template,
status, timings) and calls :meth:`Recorder.start` when it arrives and :meth:`Recorder.finish`
when its response is complete. Nothing here knows about any framework.
"""

from __future__ import annotations

import contextlib

from . import otel_metrics
from .collector import StoreCollector, register
from .exemplars import AVAILABLE as OTEL_AVAILABLE
from .exemplars import SpanIds
from .failures import FailureLog, logger
from .label_cap import OVERFLOW
from .labels import OTHER_STATUS, status_labels
from .metrics_auth import MetricsAuth
from .multiprocess import (
    check_directory,
    multiproc_dir,
    note_exemplars_off,
    warn_if_several_workers,
)
from .multiprocess_store import MultiprocessStore
from .naming import Family, metric_names
from .scrape import Exposition
from .settings import Settings
from .store import RequestStore


def declared_body_size(value: object) -> int | None:
    """The request body size a ``Content-Length`` value declares (``str`` in WSGI and
    Django, ``bytes`` in ASGI), or ``None`` when it is absent, empty or not a non-negative
    whole number.

    A declared size is what ``request_size`` records, whether or not the app reads the
    body; only without one do the adapters count the bytes the app receives.
    """
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not isinstance(value, str):
        return None
    value = value.strip(" \t")
    # isascii() first: str.isdigit() also accepts other scripts' digits ("\u0663").
    if not value.isascii() or not value.isdigit():
        return None
    try:
        return int(value)
    except ValueError:  # beyond int()'s digit limit: no real body is that large
        return None


class Recorder:
    """The store, its registration and the label policy for one middleware instance.

    Every method here is fail-open: a failure is logged (rate-limited) and swallowed, so
    recording can never break a request.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = metric_names(settings)
        # Chosen once, here: prometheus_client picks its value class at import, so the
        # environment cannot meaningfully change later in this process anyway.
        self.multiprocess_dir = multiproc_dir()
        self.store: RequestStore | MultiprocessStore
        if self.multiprocess_dir is not None:
            check_directory(self.multiprocess_dir)
            self.store = MultiprocessStore(
                self.names, settings.const_labels, settings.buckets, settings.size_buckets,
                settings.max_label_sets, on_overflow=self._overflowed,
            )
        else:
            warn_if_several_workers()
            self.store = RequestStore(
                settings.buckets, settings.size_buckets, settings.max_label_sets,
                on_overflow=self._overflowed,
            )
        self.collector = StoreCollector(self.store, self.names, settings.const_labels)
        register(settings.target_registry, self.collector)
        self.exposition = Exposition(
            settings.target_registry, self.collector,
            auth=MetricsAuth.from_settings(settings),
            max_concurrent_scrapes=settings.max_concurrent_scrapes,
        )
        self.failures = FailureLog()
        self._status_labels = status_labels(settings.group_status)
        self._excluded = settings.exclude_paths
        self._patterns = settings.exclude_patterns
        self._extras = (
            settings.time_to_first_byte or settings.request_size or settings.response_size
        )
        self._start = self.store.start
        self.wants_ttfb = settings.time_to_first_byte
        self.wants_request_size = settings.request_size
        self.wants_response_size = settings.response_size
        #: Whether adapters should look for a sampled span to attach as an exemplar.
        self.wants_exemplars = settings.exemplars and OTEL_AVAILABLE
        if self.multiprocess_dir is not None and self.wants_exemplars:
            # prometheus_client's multiprocess files have no place for exemplars: say so
            # once, and skip the span lookup per request.
            note_exemplars_off()
            self.wants_exemplars = False
        #: The OpenTelemetry metrics bridge, when configured.
        self.otel = otel_metrics.build(settings)
        #: Whether a request without exception or exemplar is only ``store.observe`` (no
        #: optional histogram, no OpenTelemetry instruments): a hot path may then call the
        #: store itself, with ``status_labels``, instead of :meth:`finish`.
        self.store_only = not self._extras and self.otel is None
        #: The status label of each valid code (others are :data:`OTHER_STATUS`).
        self.status_labels = self._status_labels

    def _overflowed(self, table: str) -> None:
        # Called once per table by the store, the first time a label set is refused.
        names = self.names
        families: dict[str, list[Family | None]] = {
            "requests": [names.requests, names.duration],
            "exceptions": [names.exceptions],
            "ttfb": [names.time_to_first_byte],
            "request_size": [names.request_size],
            "response_size": [names.response_size],
        }
        shown = ", ".join(
            family.name for family in families.get(table, []) if family is not None
        ) or table
        # A broken logging set-up must not break a request.
        with contextlib.suppress(Exception):
            logger.warning(
                "HTTP metrics: %s reached max_label_sets=%d distinct label sets; further new"
                " label sets are counted in the series labelled %r. Check for a route"
                " resolver or label returning raw values, or raise max_label_sets.",
                shown, self.settings.max_label_sets, OVERFLOW,
            )

    def counts(self, path: str) -> bool:
        """Whether requests to ``path`` are counted (not excluded by the settings)."""
        if path in self._excluded:
            return False
        if self._patterns:
            return not any(pattern.fullmatch(path) for pattern in self._patterns)
        return True

    def start(self, method: str, scheme: str = "http") -> bool:
        """A request arrived. Returns whether it was counted in flight (pass that on to
        :meth:`finish`, so the gauge only goes down for what went up)."""
        if self.otel is not None:
            try:
                self.otel.start(method, scheme)
            except Exception as exc:
                self.failures.report("recording a request start (OpenTelemetry)", exc)
        try:
            self._start(method)
            return True
        except Exception as exc:
            self.failures.report("recording a request start", exc)
            return False

    def finish(
        self,
        method: str,
        route: str,
        status: int,
        duration: float,
        in_flight: bool,
        exc: BaseException | None = None,
        ttfb: float | None = None,
        request_size: int | None = None,
        response_size: int | None = None,
        exemplar: SpanIds | None = None,
        scheme: str = "http",
    ) -> None:
        """A request's response is complete (or will never be).

        ``exemplar``: (trace_id, span_id) of the sampled span the request was served in.
        """
        store = self.store
        try:
            key = (method, route, self._status_labels.get(status, OTHER_STATUS))
            store.observe(key, duration, method if in_flight else None, exemplar)
            if self._extras:
                store.observe_extra(
                    key,
                    ttfb if self.wants_ttfb else None,
                    request_size if self.wants_request_size else None,
                    response_size if self.wants_response_size else None,
                )
            if exc is not None:
                store.count_exception((method, route, type(exc).__qualname__))
        except Exception as failure:
            self.failures.report("recording a request", failure)
        if self.otel is not None:
            try:
                self.otel.finish(method, scheme, route, status, duration, exc)
            except Exception as failure:
                self.failures.report("recording a request (OpenTelemetry)", failure)

    def exception(self, method: str, route: str, exc: BaseException) -> None:
        """Count an exception raised after the request was already recorded (a streaming
        body that failed after its last chunk, a background task)."""
        try:
            self.store.count_exception((method, route, type(exc).__qualname__))
        except Exception as failure:
            self.failures.report("recording an exception", failure)

"""Builds one middleware's parts from its settings: the store (single-process or
multiprocess), the recorder, the collector registered in the registry, and the exposition
that answers its scrapes.

The one place that knows every layer; adapters call :func:`build` once, when they are
constructed, and keep what it returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from asgi_metrics.core.failures import FailureLog
from asgi_metrics.core.in_flight import InFlightRequests
from asgi_metrics.core.label_cap import overflow_warning
from asgi_metrics.core.naming import MetricNames, metric_names
from asgi_metrics.core.recorder import Recorder
from asgi_metrics.core.request_labels import HeaderAccess, RequestLabels
from asgi_metrics.core.self_metrics import SelfMetrics
from asgi_metrics.core.settings import Settings
from asgi_metrics.core.store import NativeRequestStore, RequestStore
from asgi_metrics.exposition.auth import MetricsAuth
from asgi_metrics.exposition.collector import StoreCollector, register
from asgi_metrics.exposition.scrape import Exposition
from asgi_metrics.multiprocess.directory import check_directory, multiproc_dir
from asgi_metrics.multiprocess.in_flight_routes import InFlightPublisher
from asgi_metrics.multiprocess.native_store import NativeMultiprocessStore
from asgi_metrics.multiprocess.self_metrics_files import SelfMetricsFiles
from asgi_metrics.multiprocess.store import MultiprocessStore
from asgi_metrics.multiprocess.workers import warn_if_several_workers
from asgi_metrics.otel import metrics as otel_metrics
from asgi_metrics.otel.spans import AVAILABLE as OTEL_AVAILABLE

_labels_lock = threading.Lock()


@dataclass(frozen=True)
class Parts:
    """What one middleware instance records into and answers scrapes from."""

    settings: Settings
    names: MetricNames
    recorder: Recorder
    collector: StoreCollector
    exposition: Exposition
    #: Whether adapters look for a sampled span to attach as an exemplar.
    exemplars: bool
    #: The multiprocess directory in use, or ``None`` (single process).
    multiprocess_dir: str | None
    #: The requests in flight by identity (``in_flight_by_route``), else ``None``.
    in_flight: InFlightRequests | None = None
    #: The library's counts about itself (folds, failures, scrapes).
    self_metrics: SelfMetrics | None = None

    #: The request-derived labels made so far, by the header access they read with.
    _labels: dict[type, RequestLabels] = field(default_factory=dict, repr=False)

    def request_labels(self, access: HeaderAccess) -> RequestLabels | None:
        """The request-derived labels for an adapter reading headers with ``access``, or
        ``None`` when none are declared. One per kind of access for these parts, so every
        adapter instance sharing a store (Django's handlers) shares each label's bound."""
        settings = self.settings
        if not settings.labels:
            return None
        with _labels_lock:
            labels = self._labels.get(type(access))
            if labels is None:
                on_fold = (
                    self.self_metrics.count_fold if self.self_metrics is not None else None
                )
                labels = self._labels[type(access)] = RequestLabels(
                    settings.labels, access, settings.max_label_values,
                    self.recorder.failures, on_fold,
                )
        return labels


def build(settings: Settings) -> Parts:
    """Build and register the parts ``settings`` ask for."""
    names = metric_names(settings)
    failures = FailureLog()
    self_metrics = SelfMetrics(failures)
    on_overflow = overflow_warning(
        names, settings.max_label_sets, self_metrics.count_overflow
    )
    # Chosen once, here: prometheus_client picks its value class at import, so the
    # environment cannot meaningfully change later in this process anyway.
    directory = multiproc_dir()
    store: RequestStore | MultiprocessStore
    if directory is not None:
        check_directory(directory)
        store = MultiprocessStore(
            names, settings.const_labels, settings.buckets, settings.size_buckets,
            settings.max_label_sets, on_overflow=on_overflow, directory=directory,
        ) if not settings.native_histograms else NativeMultiprocessStore(
            names, settings.const_labels, settings.buckets, settings.size_buckets,
            settings.max_label_sets, on_overflow=on_overflow, directory=directory,
            bucket_factor=settings.native_histogram_bucket_factor,
            max_buckets=settings.native_histogram_max_buckets,
            zero_threshold=settings.native_histogram_zero_threshold,
        )
        if names.own is not None:
            # Summed over the workers from the directory, as the store's counters are.
            self_metrics.mirror_to(SelfMetricsFiles(names.own, settings.const_labels))
    else:
        warn_if_several_workers()
        store = RequestStore(
            settings.buckets, settings.size_buckets, settings.max_label_sets,
            on_overflow=on_overflow,
        ) if not settings.native_histograms else NativeRequestStore(
            settings.buckets, settings.size_buckets, settings.max_label_sets,
            on_overflow=on_overflow,
            bucket_factor=settings.native_histogram_bucket_factor,
            max_buckets=settings.native_histogram_max_buckets,
            zero_threshold=settings.native_histogram_zero_threshold,
        )
    in_flight = None
    if settings.in_flight_by_route:
        in_flight = InFlightRequests()
        if directory is not None:
            # Each worker publishes its own by route, from a thread of its own.
            InFlightPublisher(in_flight, names.in_flight, settings.const_labels, failures)
    recorder = Recorder(
        settings, names, store, otel_metrics.build(settings), failures, in_flight=in_flight
    )
    collector = StoreCollector(
        store, names, settings.const_labels,
        in_flight=None if in_flight is None else _in_flight_counts(in_flight, recorder),
        self_metrics=self_metrics,
    )
    register(settings.target_registry, collector)
    exposition = Exposition(
        settings.target_registry, collector,
        auth=MetricsAuth.from_settings(settings),
        max_concurrent_scrapes=settings.max_concurrent_scrapes,
        self_metrics=self_metrics,
    )
    # In multiprocess mode too: each worker keeps its exemplars in a file of its own
    # (asgi_metrics.multiprocess.exemplar_files).
    exemplars = settings.exemplars and OTEL_AVAILABLE
    return Parts(
        settings, names, recorder, collector, exposition, exemplars, directory, in_flight,
        self_metrics,
    )


def _in_flight_counts(
    in_flight: InFlightRequests, recorder: Recorder
) -> Callable[[], dict[tuple[str, str], int]]:
    def counts() -> dict[tuple[str, str], int]:
        return in_flight.counts(recorder.failures)

    return counts

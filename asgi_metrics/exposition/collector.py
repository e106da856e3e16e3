"""The store as a prometheus_client ``Collector``, and its place in a registry.

Registering the store lets anything that reads the registry (``generate_latest``,
``start_http_server``, a user's own exporter) see our metrics. The middleware's own
``/metrics`` does not go through this: it renders the store with the faster
:mod:`asgi_metrics.exposition` and asks the registry only for the *other* collectors.

Two middleware instances in one process (a test suite building app after app) each keep
their own store. In a registry, the most recently built instance wins: it replaces every
earlier store of ours whose metric names overlap its own, whatever other options differ
(size histograms, buckets, naming preset, const_labels), instead of raising "Duplicated
timeseries". Stores of ours with disjoint names (another ``namespace``) stay side by side;
a collector that is not ours and uses one of the names still makes registration fail.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar as ClientExemplar

from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import Family, MetricNames, bucket_labels
from asgi_metrics.core.self_metrics import RENDER_BUCKETS, SelfMetrics
from asgi_metrics.core.settings import ConfigurationError
from asgi_metrics.core.store import (
    Exemplar,
    ExemplarSlots,
    Series,
    Snapshot,
    cumulative,
    latest_exemplar,
)
from asgi_metrics.exposition.protobuf import ProtobufStoreRenderer, encode_metrics
from asgi_metrics.exposition.render import COUNTER_EXEMPLAR_VALUE, SelfRenderer, StoreRenderer
from asgi_metrics.otel.spans import format_span_id, format_trace_id


class Store(Protocol):
    """What a collector needs of a store (:class:`~asgi_metrics.core.store.RequestStore` or
    :class:`~asgi_metrics.multiprocess.store.MultiprocessStore`)."""

    buckets: tuple[float, ...]
    size_buckets: tuple[float, ...]

    def snapshot(self) -> Snapshot: ...

_rendering_others = threading.local()
# registry -> {collector: the names it takes in the registry}, in registration order; weak
# so a dropped registry takes its entry along.
_registered: weakref.WeakKeyDictionary[
    CollectorRegistry, dict[StoreCollector, frozenset[str]]
] = weakref.WeakKeyDictionary()
_registered_lock = threading.Lock()

# The sample names prometheus_client's registry reserves for a family of each type, beside
# the family's own name: two collectors clash when these sets meet.
_TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


class StoreCollector(Collector):
    """Exposes a :class:`~asgi_metrics.core.store.RequestStore` to a prometheus_client registry.

    A multiprocess store's snapshot is empty: in that mode the numbers are read from the
    directory (``prometheus_client.multiprocess``), not from a registry.
    """

    def __init__(
        self,
        store: Store,
        names: MetricNames,
        const_labels: Mapping[str, str],
        in_flight: Callable[[], dict[tuple[str, str], int]] | None = None,
        self_metrics: SelfMetrics | None = None,
    ) -> None:
        self.store = store
        self.self_metrics = self_metrics
        self._self_renderer = (
            None if self_metrics is None or names.own is None
            else SelfRenderer(names.own, const_labels)
        )
        # With in_flight_by_route: the gauge's values by (method, route), read at scrape.
        self._in_flight = in_flight
        self.names = names
        self.renderer = StoreRenderer(names, const_labels, store.buckets, store.size_buckets)
        self.protobuf_renderer = ProtobufStoreRenderer(
            names, const_labels, store.buckets, store.size_buckets
        )
        self._const_names = list(const_labels)
        self._const_values = list(const_labels.values())

    def render(self, openmetrics: bool) -> str:
        """Render this store with the fast renderer (OpenMetrics without ``# EOF``)."""
        text = self.renderer.render(self.snapshot(), openmetrics)
        if self._self_renderer is not None and self.self_metrics is not None:
            text += self._self_renderer.render(self.self_metrics, openmetrics)
        return text

    def snapshot(self) -> Snapshot:
        """The store's numbers now (with the in-flight gauge by route when it is on)."""
        snap = self.store.snapshot()
        if self._in_flight is not None:
            snap.in_flight = self._in_flight()  # type: ignore[assignment]
        return snap

    def render_protobuf(self) -> bytes:
        """Render this store as delimited protobuf ``MetricFamily`` messages, native
        histogram fields included."""
        return self.protobuf_renderer.render(self.snapshot()) + encode_metrics(self._own())

    def describe(self) -> Iterable[Metric]:
        own = self.names.own.all() if self.names.own is not None else []
        return [self._empty(family) for family in [*self.names.all(), *own]]

    def collect(self) -> Iterable[Metric]:
        if getattr(_rendering_others, "active", False):
            return []  # our own endpoint renders this store itself
        snap = self.snapshot()
        names = self.names
        metrics: list[Metric] = []
        if names.requests is not None:
            counter = self._empty(names.requests)
            for key, series in snap.requests.items():
                slots = snap.exemplars.get(key)
                latest = latest_exemplar(slots) if slots is not None else None
                counter.add_metric(
                    self._values(key), sum(series[1:]),
                    exemplar=(
                        None if latest is None
                        else _client_exemplar(latest, COUNTER_EXEMPLAR_VALUE)
                    ),
                )
            metrics.append(counter)
        metrics.append(
            self._histogram(names.duration, snap.requests, self.store.buckets, snap.exemplars)
        )
        gauge = self._empty(names.in_flight)
        # By method, or by (method, route) with in_flight_by_route.
        in_flight: Mapping[Any, int] = snap.in_flight
        for key, count in in_flight.items():
            gauge.add_metric(self._values(key if isinstance(key, tuple) else (key,)), count)
        metrics.append(gauge)
        exceptions = self._empty(names.exceptions)
        for key, count in snap.exceptions.items():
            exceptions.add_metric(self._values(key), count)
        metrics.append(exceptions)
        for family, table, bounds in (
            (names.time_to_first_byte, snap.ttfb, self.store.buckets),
            (names.request_size, snap.request_size, self.store.size_buckets),
            (names.response_size, snap.response_size, self.store.size_buckets),
        ):
            if family is not None:
                metrics.append(self._histogram(family, table, bounds))
        metrics.extend(self._own())
        return metrics

    def _own(self) -> list[Metric]:
        """The self-observation families, for readers of the registry."""
        own, counts = self.names.own, self.self_metrics
        if own is None or counts is None:
            return []
        metrics: list[Metric] = []
        tables = counts.tables()
        for key, family in (("folded", own.folded), ("overflowed", own.overflowed),
                            ("failures", own.failures), ("scrapes", own.scrapes)):
            counter = self._empty(family)
            for labels, value in tables[key].items():
                counter.add_metric(self._values(labels), value)
            metrics.append(counter)
        metrics.append(self._histogram(own.render, {(): counts.render_series()}, RENDER_BUCKETS))
        return metrics

    def _values(self, key: tuple[str, ...]) -> list[str]:
        return [*key, *self._const_values]

    def _empty(self, family: Family) -> Any:
        labels = [*family.labels, *self._const_names]
        kind = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}.get(
            family.type, HistogramMetricFamily
        )
        return kind(family.name, family.help, labels=labels)

    def _histogram(
        self,
        family: Family,
        table: Mapping[Key, Series],
        bounds: tuple[float, ...],
        exemplars: Mapping[Key, ExemplarSlots] | None = None,
    ) -> Metric:
        metric: Metric = self._empty(family)
        les = bucket_labels(bounds)
        for key, series in table.items():
            buckets: list[Any] = list(zip(les, cumulative(series), strict=True))
            slots = exemplars.get(key) if exemplars else None
            if slots is not None:
                buckets = [
                    bucket if exemplar is None else (*bucket, _client_exemplar(exemplar))
                    for bucket, exemplar in zip(buckets, slots, strict=True)
                ]
            metric.add_metric(self._values(key), buckets, series[0])  # type: ignore[attr-defined]
        return metric


def _client_exemplar(exemplar: Exemplar, value: float | None = None) -> ClientExemplar:
    # ``value`` replaces the observed one: a counter's exemplar carries its increment.
    trace_id, span_id, observed, timestamp = exemplar
    if value is None:
        value = observed
    return ClientExemplar(
        {"trace_id": format_trace_id(trace_id), "span_id": format_span_id(span_id)},
        value,
        timestamp,
    )


def _reserved_names(names: MetricNames) -> frozenset[str]:
    """Every name ``names`` takes in a registry, suffixed sample names included."""
    reserved: set[str] = set()
    for family in [*names.all(), *(names.own.all() if names.own is not None else [])]:
        reserved.add(family.name)
        reserved.update(family.name + suffix for suffix in _TYPE_SUFFIXES.get(family.type, ()))
    return frozenset(reserved)


def register(registry: CollectorRegistry, collector: StoreCollector) -> None:
    """Register ``collector``, replacing every earlier store of ours in ``registry`` whose
    metric names overlap its own (whatever their other options); stores of ours with
    disjoint names stay. A clash with a collector that is not ours raises
    :class:`ConfigurationError`, and the stores it would have replaced stay registered."""
    names = _reserved_names(collector.names)
    with _registered_lock:
        ours = _registered.setdefault(registry, {})
        replaced = [previous for previous, taken in ours.items() if taken & names]
        for previous in replaced:
            del ours[previous]
            with contextlib.suppress(KeyError):  # the user unregistered it already
                registry.unregister(previous)
        try:
            registry.register(collector)
        except ValueError as exc:
            # Not ours: prometheus_client's refusal stands. A failed build must not take
            # the working app's metrics away, so what was replaced goes back.
            for previous in replaced:
                with contextlib.suppress(ValueError):
                    registry.register(previous)
                    ours[previous] = _reserved_names(previous.names)
            raise ConfigurationError(
                f"{exc}. Another collector in this registry already uses these metric names:"
                " set 'namespace' or pass a separate 'registry'."
            ) from None
        ours[collector] = names


class others_only:
    """While active in this thread, our collectors yield nothing (see module docs)."""

    def __enter__(self) -> None:
        _rendering_others.active = True

    def __exit__(self, *exc: object) -> None:
        _rendering_others.active = False


def iter_registered(registry: CollectorRegistry) -> Iterator[StoreCollector]:
    """The stores currently registered in ``registry`` by this library."""
    with _registered_lock:
        collectors = list(_registered.get(registry, {}))
    yield from collectors

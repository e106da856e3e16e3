"""The Prometheus protobuf exposition: varint-length-delimited ``MetricFamily`` messages.

The schema is ``io/prometheus/client/metrics.proto`` of prometheus/client_model (proto2).
It is small and fixed, so it is encoded here by hand rather than through a protobuf
runtime (no new dependency). Only the fields Prometheus reads are written:

- counters: ``Counter.value`` and its exemplar; the family is named with ``_total``, as
  client_golang names it (the protobuf name is the sample name);
- gauges: ``Gauge.value``; ``unknown`` families are ``UNTYPED`` (what the text format
  calls ``untyped``); ``info`` and ``stateset`` families are gauges, as in the text format
  prometheus_client writes (``info`` named with ``_info``);
- histograms: ``sample_count``, ``sample_sum`` and the classic cumulative buckets (``+Inf``
  included, with its exemplar) and, when the series has a native state, the native fields
  in the same message: ``schema``, ``zero_threshold``, ``zero_count``, ``positive_span``
  and ``positive_delta`` (each bucket's count minus the previous bucket's). Exemplars stay
  on the classic buckets: that is where Prometheus 2.x reads them even for a native
  histogram;
- summaries: ``sample_count``, ``sample_sum``, the quantiles.

Repeated scalars are written unpacked, as the proto2 schema declares them (and as
client_golang writes them); parsers accept either.

Prometheus decides per family, from its first series, whether a histogram family is
native: a family mixes no forms here, because the store keeps a native state for every
series of a table once native histograms are on.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.metrics_core import Metric

from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import Family, MetricNames
from asgi_metrics.core.native import NativeSeries
from asgi_metrics.core.store import Exemplar, ExemplarSlots, Series, Snapshot, latest_exemplar
from asgi_metrics.otel.spans import format_span_id, format_trace_id

PROTOBUF_CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;"
    " encoding=delimited"
)

# MetricType
COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM, GAUGE_HISTOGRAM = range(6)

_double = struct.Struct("<d").pack
_SMALL = [bytes((value,)) for value in range(128)]


def varint(value: int) -> bytes:
    """Base-128 varint of ``value``; a negative value as its 64-bit two's complement
    (how protobuf writes a negative ``int64``)."""
    if 0 <= value < 128:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int) -> int:
    """The ``sint32``/``sint64`` mapping: 0, -1, 1, -2 ... to 0, 1, 2, 3 ..."""
    return value << 1 if value >= 0 else (-value << 1) - 1


def _tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _tags(number: int) -> tuple[bytes, bytes, bytes]:
    """A field's (varint, 64-bit, length-delimited) tags."""
    return _tag(number, 0), _tag(number, 1), _tag(number, 2)


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def _string(tag: bytes, text: str) -> bytes:
    return _delimited(tag, text.encode("utf-8"))


# Field tags, by message: (varint, fixed64, length-delimited) of each field number used.
_F1, _D1, _L1 = _tags(1)
_F2, _D2, _L2 = _tags(2)
_F3, _D3, _L3 = _tags(3)
_F4, _D4, _L4 = _tags(4)
_F5 = _tag(5, 0)
_L5 = _tag(5, 2)
_D6 = _tag(6, 1)
_F6 = _tag(6, 0)
_L7 = _tag(7, 2)
_F7 = _tag(7, 0)
_L12 = _tag(12, 2)
_F13 = _tag(13, 0)
#: ``positive_delta`` fields of the zigzag values 0..127, ready-made.
_DELTAS = [_F13 + _SMALL[value] for value in range(128)]


def label_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``Metric.label`` (field 1), one ``LabelPair`` per pair."""
    return b"".join(
        _delimited(_L1, _string(_L1, name) + _string(_L2, value)) for name, value in pairs
    )


def exemplar_message(
    labels: Iterable[tuple[str, str]], value: float, timestamp: float | None
) -> bytes:
    """An ``Exemplar``: its labels, value and (OpenMetrics-style) timestamp."""
    body = label_pairs(labels) + _D2 + _double(value)
    if timestamp is not None:
        seconds = math.floor(timestamp)
        nanos = min(round((timestamp - seconds) * 1e9), 999_999_999)
        body += _delimited(_L3, _F1 + varint(seconds) + _F2 + varint(nanos))
    return body


def _our_exemplar(exemplar: Exemplar, value: float | None = None) -> bytes:
    trace_id, span_id, observed, timestamp = exemplar
    return exemplar_message(
        (("trace_id", format_trace_id(trace_id)), ("span_id", format_span_id(span_id))),
        observed if value is None else value,
        timestamp,
    )


def metric_family(name: str, help_text: str, kind: int, metrics: Iterable[bytes]) -> bytes:
    """One length-delimited ``MetricFamily`` from its already encoded ``Metric`` bodies."""
    body = b"".join((
        _string(_L1, name), _string(_L2, help_text), _F3, varint(kind),
        *(_delimited(_L4, metric) for metric in metrics),
    ))
    return varint(len(body)) + body


def _count(tag_int: bytes, tag_float: bytes, value: float) -> bytes:
    # Counts are uint64; a non-integral count (a prometheus_client gauge histogram, say)
    # goes in the float field, which overrides the integer one.
    if value == int(value) and value >= 0:
        return tag_int + varint(int(value))
    return tag_float + _double(value)


def native_fields(native: NativeSeries) -> bytes:
    """The native part of a ``Histogram``: schema, zero bucket, positive spans and deltas.

    A span starts at the first bucket index (later spans: at the gap since the previous
    span's end) and covers consecutive non-empty buckets; each delta is a bucket's count
    minus the previous bucket's. A histogram without populated buckets still gets one
    empty span: Prometheus 2.44+ tells a native histogram from a classic one by its spans
    (2.42 by ``zero_threshold`` > 0, which the store always sets).
    """
    out = [
        _F5, varint(zigzag(native.schema)),
        _D6, _double(native.zero_threshold),
        _F7, varint(native.zero_count),
    ]
    positive = native.positive
    spans: list[list[int]] = []
    deltas: list[bytes] = []
    append = deltas.append
    previous_index = 0
    previous_count = 0
    # The common small deltas as ready-made (tag, value) bytes.
    small = _DELTAS
    for index in sorted(positive):
        count = positive[index]
        if spans and index == previous_index + 1:
            spans[-1][1] += 1
        else:
            spans.append([index if not spans else index - previous_index - 1, 1])
        encoded = zigzag(count - previous_count)
        append(small[encoded] if encoded < 128 else _F13 + varint(encoded))
        previous_index, previous_count = index, count
    if not spans:
        spans.append([0, 0])
    for offset, length in spans:
        out.append(_delimited(_L12, _F1 + varint(zigzag(offset)) + _F2 + varint(length)))
    out.extend(deltas)
    return b"".join(out)


class _FamilyEncoder:
    """Encodes one of our families, caching each series' label bytes."""

    def __init__(
        self,
        family: Family,
        const_labels: Mapping[str, str],
        bounds: tuple[float, ...] = (),
    ) -> None:
        self.family = family
        self.const = tuple(const_labels.items())
        self._labels: dict[object, bytes] = {}
        # Bucket i's ``upper_bound`` field, ``+Inf`` last: the same bytes in every scrape.
        self.bounds = [_D2 + _double(bound) for bound in (*bounds, math.inf)]
        name = f"{family.name}_total" if family.type == "counter" else family.name
        kind = {"counter": COUNTER, "gauge": GAUGE}.get(family.type, HISTOGRAM)
        head = b"".join((_string(_L1, name), _string(_L2, family.help), _F3, varint(kind)))
        self._head = head

    def labels(self, key: tuple[str, ...]) -> bytes:
        encoded = self._labels.get(key)
        if encoded is None:
            encoded = self._labels[key] = label_pairs(
                (*zip(self.family.labels, key, strict=True), *self.const)
            )
        return encoded

    def family_bytes(self, metrics: list[bytes]) -> bytes:
        if not metrics:
            return b""  # a family without series tells Prometheus nothing
        body = b"".join((self._head, *(_delimited(_L4, metric) for metric in metrics)))
        return varint(len(body)) + body

    def histogram(
        self,
        table: Mapping[Key, Series],
        native: Mapping[Key, NativeSeries] | None,
        exemplars: Mapping[Key, ExemplarSlots] | None = None,
    ) -> bytes:
        metrics = []
        bounds = self.bounds
        for key, series in table.items():
            slots = exemplars.get(key) if exemplars else None
            parts = [b""] * (len(series) + 2)
            running = 0
            total = len(series) - 1
            for index in range(total):
                running += int(series[index + 1])
                bucket = _F1 + varint(running) + bounds[index]
                exemplar = slots[index] if slots is not None else None
                if exemplar is not None:
                    bucket += _delimited(_L3, _our_exemplar(exemplar))
                parts[index + 3] = _delimited(_L3, bucket)
            parts[0] = _F1 + varint(running)
            parts[1] = _D2 + _double(series[0])
            state = native.get(key) if native else None
            if state is not None:
                parts[2] = native_fields(state)
            metrics.append(self.labels(key) + _delimited(_L7, b"".join(parts)))
        return self.family_bytes(metrics)

    def counter_from_histogram(
        self, table: Mapping[Key, Series], exemplars: Mapping[Key, ExemplarSlots]
    ) -> bytes:
        metrics = []
        for key, series in table.items():
            counter = _D1 + _double(sum(series[1:]))
            slots = exemplars.get(key)
            exemplar = latest_exemplar(slots) if slots is not None else None
            if exemplar is not None:
                counter += _delimited(_L2, _our_exemplar(exemplar, 1.0))
            metrics.append(self.labels(key) + _delimited(_L3, counter))
        return self.family_bytes(metrics)

    def counter(self, table: Mapping[Key, int]) -> bytes:
        return self.family_bytes([
            self.labels(key) + _delimited(_L3, _D1 + _double(value))
            for key, value in table.items()
        ])

    def gauge(self, table: Mapping[Any, int]) -> bytes:
        """In-flight values by method, or by (method, route) with ``in_flight_by_route``."""
        return self.family_bytes([
            self.labels(key if isinstance(key, tuple) else (key,))
            + _delimited(_L2, _D1 + _double(value))
            for key, value in table.items()
        ])


class ProtobufStoreRenderer:
    """Renders a :class:`~asgi_metrics.core.store.Snapshot` of one store as delimited
    ``MetricFamily`` messages, in the order of the text renderer's families."""

    def __init__(
        self,
        names: MetricNames,
        const_labels: Mapping[str, str],
        buckets: tuple[float, ...],
        size_buckets: tuple[float, ...],
    ) -> None:
        def encoder(
            family: Family | None, bounds: tuple[float, ...] = ()
        ) -> _FamilyEncoder | None:
            return None if family is None else _FamilyEncoder(family, const_labels, bounds)

        self._requests = encoder(names.requests)
        self._duration = _FamilyEncoder(names.duration, const_labels, buckets)
        self._in_flight = _FamilyEncoder(names.in_flight, const_labels)
        self._exceptions = _FamilyEncoder(names.exceptions, const_labels)
        self._extra = (
            ("ttfb", encoder(names.time_to_first_byte, buckets)),
            ("request_size", encoder(names.request_size, size_buckets)),
            ("response_size", encoder(names.response_size, size_buckets)),
        )

    def render(self, snapshot: Snapshot) -> bytes:
        """Every family of the store that has series."""
        native = snapshot.native
        out = []
        if self._requests is not None:
            out.append(self._requests.counter_from_histogram(snapshot.requests,
                                                             snapshot.exemplars))
        out.append(self._duration.histogram(snapshot.requests, native.get("requests"),
                                            snapshot.exemplars))
        out.append(self._in_flight.gauge(snapshot.in_flight))
        out.append(self._exceptions.counter(snapshot.exceptions))
        for table, family in self._extra:
            if family is not None:
                out.append(family.histogram(getattr(snapshot, table), native.get(table)))
        return b"".join(out)


# --- prometheus_client's metric families --------------------------------------------------

#: (family name, the series' labels as sorted (name, value) pairs) -> its native state:
#: how the multiprocess scrape adds the directory's native states to its histograms.
NativeLookup = Callable[[str, tuple[tuple[str, str], ...]], "NativeSeries | None"]


def _timestamp(value: Any) -> float | None:
    # prometheus_client keeps a float, or its own Timestamp (which converts to float).
    return None if value is None else float(value)


def _sample_exemplar(sample: Any) -> bytes | None:
    exemplar = sample.exemplar
    if exemplar is None:
        return None
    return exemplar_message(
        exemplar.labels.items(), exemplar.value, _timestamp(exemplar.timestamp)
    )


def _metric(labels: Mapping[str, str], timestamp: Any, field: bytes) -> bytes:
    out = label_pairs(labels.items()) + field
    ts = _timestamp(timestamp)
    if ts is not None:
        out += _F6 + varint(round(ts * 1000))
    return out


def _grouped(samples: Iterable[Any], drop: str) -> Iterator[tuple[dict[str, str], list[Any]]]:
    """Samples grouped into series: by their labels without ``drop`` (``le``,
    ``quantile``), in order of first appearance."""
    groups: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[Any]]] = {}
    for sample in samples:
        labels = {name: value for name, value in sample.labels.items() if name != drop}
        key = tuple(labels.items())
        group = groups.get(key)
        if group is None:
            group = groups[key] = (labels, [])
        group[1].append(sample)
    yield from groups.values()


def _simple(metric: Metric, suffix: str, kind: int, field: bytes) -> bytes:
    name = metric.name + suffix
    return metric_family(name, metric.documentation, kind, [
        _metric(sample.labels, sample.timestamp,
                _delimited(field, _D1 + _double(sample.value)))
        for sample in metric.samples if sample.name == name
    ])


def _histogram(metric: Metric, native: NativeLookup | None) -> bytes:
    gauge = metric.type == "gaugehistogram"
    count_name = metric.name + ("_gcount" if gauge else "_count")
    sum_name = metric.name + ("_gsum" if gauge else "_sum")
    bucket_name = metric.name + "_bucket"
    metrics = []
    for labels, samples in _grouped(metric.samples, "le"):
        parts: list[bytes] = []
        count: float | None = None
        timestamp = None
        for sample in samples:
            if sample.name == bucket_name:
                bucket = _count(_F1, _D4, sample.value) + _D2 + _double(
                    float(sample.labels["le"])
                )
                exemplar = _sample_exemplar(sample)
                if exemplar is not None:
                    bucket += _delimited(_L3, exemplar)
                parts.append(_delimited(_L3, bucket))
                timestamp = sample.timestamp
            elif sample.name == count_name:
                count = sample.value
            elif sample.name == sum_name:
                parts.append(_D2 + _double(sample.value))
        if count is None:  # no _count: the +Inf bucket's count, as Prometheus would read it
            count = max((s.value for s in samples if s.name == bucket_name), default=0.0)
        parts.append(_count(_F1, _D4, count))
        state = native(metric.name, tuple(sorted(labels.items()))) if native else None
        if state is not None:
            parts.append(native_fields(state))
        metrics.append(_metric(labels, timestamp, _delimited(_L7, b"".join(parts))))
    kind = GAUGE_HISTOGRAM if gauge else HISTOGRAM
    return metric_family(metric.name, metric.documentation, kind, metrics)


def _summary(metric: Metric) -> bytes:
    metrics = []
    for labels, samples in _grouped(metric.samples, "quantile"):
        parts: list[bytes] = []
        timestamp = None
        for sample in samples:
            timestamp = sample.timestamp if timestamp is None else timestamp
            if sample.name == metric.name + "_count":
                parts.append(_F1 + varint(max(int(sample.value), 0)))
            elif sample.name == metric.name + "_sum":
                parts.append(_D2 + _double(sample.value))
            elif sample.name == metric.name and "quantile" in sample.labels:
                quantile = _D1 + _double(float(sample.labels["quantile"]))
                parts.append(_delimited(_L3, quantile + _D2 + _double(sample.value)))
        metrics.append(_metric(labels, timestamp, _delimited(_L4, b"".join(parts))))
    return metric_family(metric.name, metric.documentation, SUMMARY, metrics)


def _counter(metric: Metric) -> bytes:
    name = metric.name + "_total"
    metrics = []
    for sample in metric.samples:
        if sample.name != name:
            continue  # _created: Prometheus 2.x reads no created timestamp from protobuf
        counter = _D1 + _double(sample.value)
        exemplar = _sample_exemplar(sample)
        if exemplar is not None:
            counter += _delimited(_L2, exemplar)
        metrics.append(_metric(sample.labels, sample.timestamp, _delimited(_L3, counter)))
    return metric_family(name, metric.documentation, COUNTER, metrics)


def encode_metric(metric: Metric, native: NativeLookup | None = None) -> bytes:
    """One prometheus_client metric family as a delimited ``MetricFamily`` (empty bytes
    for a family without samples). ``native`` gives the native state of a histogram's
    series, if it has one."""
    if not metric.samples:
        return b""
    kind = metric.type
    if kind == "counter":
        return _counter(metric)
    if kind in ("histogram", "gaugehistogram"):
        return _histogram(metric, native)
    if kind == "summary":
        return _summary(metric)
    if kind == "info":
        return _simple(metric, "_info", GAUGE, _L2)
    if kind == "unknown":
        return _simple(metric, "", UNTYPED, _L5)
    return _simple(metric, "", GAUGE, _L2)  # gauge, stateset


def encode_metrics(metrics: Iterable[Metric], native: NativeLookup | None = None) -> bytes:
    """Every family of ``metrics`` (e.g. a registry's ``collect()``)."""
    return b"".join(encode_metric(metric, native) for metric in metrics)


def encode_registry(collector: Any, native: NativeLookup | None = None) -> bytes:
    """Every family of something with ``collect()`` (a registry, a view of one)."""
    return encode_metrics(collector.collect(), native)


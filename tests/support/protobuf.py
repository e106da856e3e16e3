"""An independent decoder for the Prometheus protobuf exposition.

The message classes are built at test time by Google's protobuf runtime from a descriptor
written here by hand, field by field, from ``io/prometheus/client/metrics.proto`` of
prometheus/client_model: the library's hand-written encoder is checked against the
reference implementation of the wire format, not against itself.

:func:`parse_delimited` reads a scrape body (varint-length-delimited ``MetricFamily``
messages); :func:`classic_samples` flattens the families into the samples the text format
would show, to be compared sample by sample; :func:`native_buckets` expands a histogram's
spans and deltas back into ``{bucket index: count}``.
"""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2
from prometheus_client.utils import floatToGoString

_O = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_R = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_T = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _T.TYPE_STRING, "double": _T.TYPE_DOUBLE, "uint64": _T.TYPE_UINT64,
    "uint32": _T.TYPE_UINT32, "sint32": _T.TYPE_SINT32, "sint64": _T.TYPE_SINT64,
    "int64": _T.TYPE_INT64,
}
_PACKAGE = "io.prometheus.client"

# message -> [(field, number, label, type)]; a type not in _SCALARS is a message of this
# package, "MetricType" the enum, ".google.protobuf.Timestamp" the well-known type.
_MESSAGES: dict[str, list[tuple[str, int, int, str]]] = {
    "LabelPair": [("name", 1, _O, "string"), ("value", 2, _O, "string")],
    "Gauge": [("value", 1, _O, "double")],
    "Counter": [
        ("value", 1, _O, "double"), ("exemplar", 2, _O, "Exemplar"),
        ("created_timestamp", 3, _O, ".google.protobuf.Timestamp"),
    ],
    "Quantile": [("quantile", 1, _O, "double"), ("value", 2, _O, "double")],
    "Summary": [
        ("sample_count", 1, _O, "uint64"), ("sample_sum", 2, _O, "double"),
        ("quantile", 3, _R, "Quantile"),
        ("created_timestamp", 4, _O, ".google.protobuf.Timestamp"),
    ],
    "Untyped": [("value", 1, _O, "double")],
    "Histogram": [
        ("sample_count", 1, _O, "uint64"), ("sample_count_float", 4, _O, "double"),
        ("sample_sum", 2, _O, "double"), ("bucket", 3, _R, "Bucket"),
        ("created_timestamp", 15, _O, ".google.protobuf.Timestamp"),
        ("schema", 5, _O, "sint32"), ("zero_threshold", 6, _O, "double"),
        ("zero_count", 7, _O, "uint64"), ("zero_count_float", 8, _O, "double"),
        ("negative_span", 9, _R, "BucketSpan"), ("negative_delta", 10, _R, "sint64"),
        ("negative_count", 11, _R, "double"),
        ("positive_span", 12, _R, "BucketSpan"), ("positive_delta", 13, _R, "sint64"),
        ("positive_count", 14, _R, "double"), ("exemplars", 16, _R, "Exemplar"),
    ],
    "Bucket": [
        ("cumulative_count", 1, _O, "uint64"), ("cumulative_count_float", 4, _O, "double"),
        ("upper_bound", 2, _O, "double"), ("exemplar", 3, _O, "Exemplar"),
    ],
    "BucketSpan": [("offset", 1, _O, "sint32"), ("length", 2, _O, "uint32")],
    "Exemplar": [
        ("label", 1, _R, "LabelPair"), ("value", 2, _O, "double"),
        ("timestamp", 3, _O, ".google.protobuf.Timestamp"),
    ],
    "Metric": [
        ("label", 1, _R, "LabelPair"), ("gauge", 2, _O, "Gauge"),
        ("counter", 3, _O, "Counter"), ("summary", 4, _O, "Summary"),
        ("untyped", 5, _O, "Untyped"), ("histogram", 7, _O, "Histogram"),
        ("timestamp_ms", 6, _O, "int64"),
    ],
    "MetricFamily": [
        ("name", 1, _O, "string"), ("help", 2, _O, "string"), ("type", 3, _O, "MetricType"),
        ("metric", 4, _R, "Metric"), ("unit", 5, _O, "string"),
    ],
}
_METRIC_TYPES = ["COUNTER", "GAUGE", "SUMMARY", "UNTYPED", "HISTOGRAM", "GAUGE_HISTOGRAM"]


def _file() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="io/prometheus/client/metrics.proto", package=_PACKAGE, syntax="proto2",
        dependency=["google/protobuf/timestamp.proto"],
    )
    enum = proto.enum_type.add(name="MetricType")
    for number, name in enumerate(_METRIC_TYPES):
        enum.value.add(name=name, number=number)
    for message_name, fields in _MESSAGES.items():
        message = proto.message_type.add(name=message_name)
        for name, number, label, kind in fields:
            field = message.field.add(name=name, number=number, label=label)
            if kind in _SCALARS:
                field.type = _SCALARS[kind]  # type: ignore[assignment]
            elif kind == "MetricType":
                field.type = _T.TYPE_ENUM
                field.type_name = f".{_PACKAGE}.MetricType"
            else:
                field.type = _T.TYPE_MESSAGE
                field.type_name = kind if kind.startswith(".") else f".{_PACKAGE}.{kind}"
    return proto


def _classes() -> dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    timestamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(timestamp)
    pool.Add(timestamp)
    pool.Add(_file())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


CLASSES = _classes()
MetricFamily = CLASSES["MetricFamily"]
COUNTER, GAUGE, SUMMARY, UNTYPED, HISTOGRAM, GAUGE_HISTOGRAM = range(6)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_delimited(body: bytes) -> list[Any]:
    """Every ``MetricFamily`` of a delimited protobuf scrape body, in order."""
    families = []
    pos = 0
    while pos < len(body):
        size, pos = _varint(body, pos)
        assert pos + size <= len(body), "a message runs past the end of the body"
        family = MetricFamily()
        family.ParseFromString(body[pos:pos + size])
        families.append(family)
        pos += size
    return families


def by_name(body: bytes) -> dict[str, Any]:
    """The families of a scrape body by name (each name once)."""
    families = parse_delimited(body)
    named = {family.name: family for family in families}
    assert len(named) == len(families), "a family name appears twice"
    return named


def labels_of(metric: Any) -> dict[str, str]:
    return {pair.name: pair.value for pair in metric.label}


Sample = tuple[str, tuple[tuple[str, str], ...], float]


def classic_samples(families: list[Any]) -> list[Sample]:
    """The samples the text format shows for these families (no ``_created``):
    ``(sample name, sorted labels, value)``, sorted."""
    out: list[Sample] = []
    for family in families:
        name = family.name
        for metric in family.metric:
            labels = labels_of(metric)

            def add(sample: str, value: float, extra: dict[str, str] | None = None,
                    labels: dict[str, str] = labels) -> None:
                out.append((sample, tuple(sorted({**labels, **(extra or {})}.items())), value))

            if family.type == COUNTER:
                add(name, metric.counter.value)
            elif family.type == GAUGE:
                add(name, metric.gauge.value)
            elif family.type == UNTYPED:
                add(name, metric.untyped.value)
            elif family.type == SUMMARY:
                summary = metric.summary
                add(f"{name}_count", summary.sample_count)
                add(f"{name}_sum", summary.sample_sum)
                for quantile in summary.quantile:
                    add(name, quantile.value, {"quantile": floatToGoString(quantile.quantile)})
            else:
                histogram = metric.histogram
                count = histogram.sample_count_float or histogram.sample_count
                gauge = family.type == GAUGE_HISTOGRAM
                add(f"{name}_gcount" if gauge else f"{name}_count", count)
                add(f"{name}_gsum" if gauge else f"{name}_sum", histogram.sample_sum)
                for bucket in histogram.bucket:
                    add(f"{name}_bucket",
                        bucket.cumulative_count_float or bucket.cumulative_count,
                        {"le": floatToGoString(bucket.upper_bound)})
                if not histogram.bucket or not math.isinf(histogram.bucket[-1].upper_bound):
                    add(f"{name}_bucket", count, {"le": "+Inf"})
    return sorted(out)


def native_buckets(histogram: Any) -> dict[int, int]:
    """A native histogram's positive buckets, ``{index: count}``, from spans and deltas."""
    buckets: dict[int, int] = {}
    index = 0
    count = 0
    deltas = iter(histogram.positive_delta)
    for span in histogram.positive_span:
        # The first span's offset is its first index, a later one's the gap after the
        # previous span: both are added to the index just past the previous span.
        index += span.offset
        for _ in range(span.length):
            count += next(deltas)
            buckets[index] = count
            index += 1
    assert next(deltas, None) is None, "more deltas than the spans cover"
    return buckets

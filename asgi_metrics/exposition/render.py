"""Rendering the store in the Prometheus text format (0.0.4) and OpenMetrics 1.0.

This is the scrape-side hot path. Each series' label string and the prefix of every one of
its sample lines are formatted once, the first time the series is seen, and kept; a scrape
then only joins cached prefixes with current numbers. That is what makes it several times
faster than ``prometheus_client.generate_latest`` on the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asgi_metrics.core.labels import Key
from asgi_metrics.core.naming import (
    Family,
    MetricNames,
    SelfFamilies,
    bucket_labels,
    floatToGoString,
)
from asgi_metrics.core.self_metrics import RENDER_BUCKETS, SelfMetrics
from asgi_metrics.core.store import Exemplar, ExemplarSlots, Series, Snapshot, latest_exemplar
from asgi_metrics.otel.spans import format_span_id, format_trace_id

#: The value of the exemplar on a request counter: the increment the request made.
COUNTER_EXEMPLAR_VALUE = 1.0

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def escape_label_value(value: str) -> str:
    """Escape a label value for both text formats (backslash, double quote, newline)."""
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _number(value: float) -> str:
    # Counts are whole numbers: format them without the float machinery. The range check
    # comes first so that inf and nan (int() raises on them) take the general path.
    if -1e15 < value < 1e15 and value == int(value):
        return f"{int(value)}.0"
    return floatToGoString(value)


def exemplar_suffix(exemplar: Exemplar, value: float | None = None) -> str:
    """`` # {trace_id="...",span_id="..."} value timestamp``: an OpenMetrics exemplar (63
    characters of labels, within the format's 128). ``value`` replaces the observed one
    (a counter's exemplar carries its increment)."""
    trace_id, span_id, observed, timestamp = exemplar
    if value is None:
        value = observed
    return (
        f' # {{trace_id="{format_trace_id(trace_id)}",span_id="{format_span_id(span_id)}"}}'
        f" {floatToGoString(value)} {timestamp:.3f}"
    )


class _FamilyRenderer:
    """Renders one family, caching the formatted sample-line prefixes per series."""

    def __init__(self, family: Family, const_labels: str, bounds: tuple[float, ...]) -> None:
        self.family = family
        self.const_labels = const_labels
        self.les = bucket_labels(bounds)
        self._prefixes: dict[object, list[str]] = {}
        name = family.name
        text_name = f"{name}_total" if family.type == "counter" else name
        help_text = _escape_help(family.help)
        self.text_header = (
            f"# HELP {text_name} {help_text}\n# TYPE {text_name} {family.type}\n"
        )
        self.openmetrics_header = f"# HELP {name} {help_text}\n# TYPE {name} {family.type}\n"

    def _labels(self, values: tuple[str, ...]) -> str:
        pairs = ",".join(
            f'{label}="{escape_label_value(value)}"'
            for label, value in zip(self.family.labels, values, strict=True)
        )
        if self.const_labels:
            pairs = f"{pairs},{self.const_labels}" if pairs else self.const_labels
        return pairs

    def _histogram_prefixes(self, key: Key) -> list[str]:
        prefixes = self._prefixes.get(key)
        if prefixes is None:
            labels = self._labels(key)
            name = self.family.name
            sep = "," if labels else ""
            prefixes = [f'{name}_bucket{{{labels}{sep}le="{le}"}} ' for le in self.les]
            braced = f"{{{labels}}}" if labels else ""
            prefixes.append(f"{name}_count{braced} ")
            prefixes.append(f"{name}_sum{braced} ")
            self._prefixes[key] = prefixes
        return prefixes

    def _sample_prefix(self, key: tuple[str, ...], suffix: str) -> str:
        prefixes = self._prefixes.get(key)
        if prefixes is None:
            prefixes = [f"{self.family.name}{suffix}{{{self._labels(key)}}} "]
            self._prefixes[key] = prefixes
        return prefixes[0]

    def histogram(
        self,
        out: list[str],
        table: Mapping[Key, Series],
        exemplars: Mapping[Key, ExemplarSlots] | None = None,
    ) -> None:
        """``exemplars`` (OpenMetrics only) go on the bucket their value fell in."""
        for key, series in table.items():
            prefixes = self._histogram_prefixes(key)
            slots = exemplars.get(key) if exemplars else None
            running = 0.0
            index = 0
            for index, count in enumerate(series[1:]):
                running += count
                exemplar = slots[index] if slots is not None else None
                if exemplar is None:
                    out.append(f"{prefixes[index]}{_number(running)}\n")
                else:
                    out.append(
                        f"{prefixes[index]}{_number(running)}{exemplar_suffix(exemplar)}\n"
                    )
            out.append(f"{prefixes[index + 1]}{_number(running)}\n")
            out.append(f"{prefixes[index + 2]}{_number(series[0])}\n")

    def counter_from_histogram(
        self,
        out: list[str],
        table: Mapping[Key, Series],
        exemplars: Mapping[Key, ExemplarSlots] | None = None,
    ) -> None:
        """``exemplars`` (OpenMetrics only): each series shows its latest one, with the
        counter's increment, 1, as its value (as prometheus_client, client_golang and
        starlette_exporter do); the observed duration stays on the histogram buckets."""
        for key, series in table.items():
            line = f"{self._sample_prefix(key, '_total')}{_number(sum(series[1:]))}"
            slots = exemplars.get(key) if exemplars else None
            exemplar = latest_exemplar(slots) if slots is not None else None
            if exemplar is not None:
                line += exemplar_suffix(exemplar, COUNTER_EXEMPLAR_VALUE)
            out.append(line + "\n")

    def counter(self, out: list[str], table: Mapping[Key, int]) -> None:
        for key, value in table.items():
            out.append(f"{self._sample_prefix(key, '_total')}{_number(value)}\n")

    def gauge(self, out: list[str], table: Mapping[Any, int]) -> None:
        """In-flight values by method, or by (method, route) with ``in_flight_by_route``."""
        for key, value in table.items():
            values = key if isinstance(key, tuple) else (key,)
            out.append(f"{self._sample_prefix(values, '')}{_number(value)}\n")


class StoreRenderer:
    """Renders a :class:`~asgi_metrics.core.store.Snapshot` of one store."""

    def __init__(
        self,
        names: MetricNames,
        const_labels: Mapping[str, str],
        buckets: tuple[float, ...],
        size_buckets: tuple[float, ...],
    ) -> None:
        const = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in const_labels.items())

        def renderer(
            family: Family | None, bounds: tuple[float, ...] = ()
        ) -> _FamilyRenderer | None:
            return None if family is None else _FamilyRenderer(family, const, bounds)

        self._requests = renderer(names.requests)
        self._duration = _FamilyRenderer(names.duration, const, buckets)
        self._in_flight = _FamilyRenderer(names.in_flight, const, ())
        self._exceptions = _FamilyRenderer(names.exceptions, const, ())
        self._ttfb = renderer(names.time_to_first_byte, buckets)
        self._request_size = renderer(names.request_size, size_buckets)
        self._response_size = renderer(names.response_size, size_buckets)

    def render(self, snapshot: Snapshot, openmetrics: bool) -> str:
        """Render every family of the store (OpenMetrics without the final ``# EOF``)."""
        out: list[str] = []
        # Exemplars exist only in OpenMetrics; the 0.0.4 text format has no syntax for them.
        exemplars = snapshot.exemplars if openmetrics else None

        def header(family: _FamilyRenderer) -> None:
            out.append(family.openmetrics_header if openmetrics else family.text_header)

        if self._requests is not None:
            header(self._requests)
            self._requests.counter_from_histogram(out, snapshot.requests, exemplars)
        header(self._duration)
        self._duration.histogram(out, snapshot.requests, exemplars)
        header(self._in_flight)
        self._in_flight.gauge(out, snapshot.in_flight)
        header(self._exceptions)
        self._exceptions.counter(out, snapshot.exceptions)
        for family, table in (
            (self._ttfb, snapshot.ttfb),
            (self._request_size, snapshot.request_size),
            (self._response_size, snapshot.response_size),
        ):
            if family is not None:
                header(family)
                family.histogram(out, table)
        return "".join(out)


class SelfRenderer:
    """Renders a store's :class:`~asgi_metrics.core.self_metrics.SelfMetrics`."""

    def __init__(self, families: SelfFamilies, const_labels: Mapping[str, str]) -> None:
        const = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in const_labels.items())
        self._counters = [
            (key, _FamilyRenderer(family, const, ()))
            for key, family in (
                ("folded", families.folded), ("overflowed", families.overflowed),
                ("failures", families.failures), ("scrapes", families.scrapes),
            )
        ]
        self._render = _FamilyRenderer(families.render, const, RENDER_BUCKETS)

    def render(self, counts: SelfMetrics, openmetrics: bool) -> str:
        out: list[str] = []
        tables = counts.tables()
        for key, family in self._counters:
            out.append(family.openmetrics_header if openmetrics else family.text_header)
            family.counter(out, tables[key])
        out.append(self._render.openmetrics_header if openmetrics else self._render.text_header)
        self._render.histogram(out, {(): counts.render_series()})
        return "".join(out)

"""Read a scrape, sample by sample, through prometheus_client's own parser (so the
exposition is checked for validity too).

Three shapes, for three kinds of test:

- :data:`Families` (``{family name: Metric}``, from :func:`parse_families`), read with
  :func:`samples`, :func:`sample`, :func:`routes`, :func:`request_count`,
  :func:`in_flight_sum`;
- :data:`Samples` (``{(sample name, labels): value}``, from :func:`parse_samples`), read
  with :func:`requests_by_labels`, :func:`exceptions_by_labels`, :func:`in_flight`,
  :func:`duration_sum`;
- straight from the text: :func:`series_of` (one sample name, by label tuple), and
  :func:`samples_by_label_string` / :func:`total` (by the label string as written).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: Names of the default naming preset's request series.
REQUEST = "http_requests_total"
DURATION = "http_request_duration_seconds"
IN_FLIGHT = "http_requests_in_flight"
EXCEPTIONS = "http_request_exceptions_total"

# --- by family ----------------------------------------------------------------------------

Families = dict[str, Any]


def parse_families(text: str) -> Families:
    """Prometheus text format -> {family name: Metric}."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: Families, name: str) -> list[tuple[dict[str, str], float]]:
    """Every (labels, value) of the sample called ``name`` (e.g. ``http_requests_total``)."""
    out = []
    for family in families.values():
        for s in family.samples:
            if s.name == name:
                out.append((dict(s.labels), float(s.value)))
    return out


def sample(families: Families, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The value of the one sample ``name`` whose labels are exactly ``labels``; 0.0 if
    there is no such series (use :func:`samples` to assert absence)."""
    want = dict(labels or {})
    found = [value for got, value in samples(families, name) if got == want]
    assert len(found) <= 1, (name, want, found)
    return found[0] if found else 0.0


def routes(families: Families, name: str = REQUEST) -> set[str]:
    """The distinct ``route`` label values of ``name``."""
    return {labels["route"] for labels, _ in samples(families, name)}


def request_count(
    families: Families, route: str, method: str = "GET", status: str = "200"
) -> float:
    """``http_requests_total`` of one (method, route, status)."""
    return sample(families, REQUEST, {"method": method, "route": route, "status": status})


def in_flight_sum(families: Families) -> float:
    """The sum of the in-flight gauge over all methods."""
    return sum(value for _, value in samples(families, IN_FLIGHT))


# --- by sample ----------------------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """Every sample of a text-format scrape, by (sample name, labels)."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def requests_by_labels(
    samples: Samples, prefix: str = ""
) -> dict[tuple[str, str, str], float]:
    """``http_requests_total`` as {(method, route, status): count}."""
    out = {}
    for (name, labels), value in samples.items():
        if name == f"{prefix}http_requests_total":
            got = dict(labels)
            out[(got["method"], got["route"], got["status"])] = value
    return out


def exceptions_by_labels(samples: Samples) -> dict[tuple[str, str, str], float]:
    """``http_request_exceptions_total`` as {(method, route, exception_type): count}."""
    out = {}
    for (name, labels), value in samples.items():
        if name == "http_request_exceptions_total":
            got = dict(labels)
            out[(got["method"], got["route"], got["exception_type"])] = value
    return out


def in_flight(samples: Samples) -> float:
    """The sum of the in-flight gauge over methods."""
    return sum(v for (name, _), v in samples.items() if name == "http_requests_in_flight")


def duration_sum(samples: Samples, method: str, route: str, status: str) -> float:
    key = frozenset({"method": method, "route": route, "status": status}.items())
    return samples[("http_request_duration_seconds_sum", key)]


# --- straight from the text ---------------------------------------------------------------


def series_of(text: str, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named ``family`` (e.g. ``http_requests_total``), by sorted label
    tuple, parsed by prometheus_client's own parser."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


def samples_by_label_string(text: str, name: str) -> dict[str, float]:
    """``{label string: value}`` of the samples called ``name`` in an exposition."""
    found = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) == name:
            found[match.group(2) or ""] = float(match.group(3))
    return found


def total(text: str, name: str, contains: str = "") -> float:
    """The sum of the samples called ``name`` whose labels contain ``contains``."""
    return sum(v for labels, v in samples_by_label_string(text, name).items() if contains in labels)

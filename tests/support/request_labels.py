"""Read request-derived labels (issue 13) out of a parsed scrape, sample by sample.

The scrape is parsed with prometheus_client's parser (:func:`tests.support.scrape.parse_samples`);
these helpers only pick samples by name and project their labels, so a test can say
"``http_requests_total`` by (route, tenant)" and compare the exact dict.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tests.support.scrape import Samples


def label_sets(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called ``name``."""
    return [dict(labels) for sample, labels in samples if sample == name]


def by(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples called ``name`` as ``{(value of each of labels): value}``; two samples
    with the same projection fail the test (the projection must identify the series)."""
    found: dict[tuple[str, ...], float] = {}
    for (sample, pairs), value in samples.items():
        if sample != name:
            continue
        got = dict(pairs)
        key = tuple(got[label] for label in labels)
        assert key not in found, (name, key, "projection is not unique")
        found[key] = value
    return found


def label_names(samples: Samples, name: str) -> set[tuple[str, ...]]:
    """The sorted label names of the samples called ``name`` (one tuple per shape)."""
    return {tuple(sorted(labels)) for labels in label_sets(samples, name)}


def total(samples: Samples, name: str) -> float:
    """The sum of every sample called ``name``."""
    return sum(value for (sample, _), value in samples.items() if sample == name)


def failure_lines(records: Sequence[logging.LogRecord], text: str) -> list[str]:
    """The messages of the library's log records that contain ``text``."""
    return [
        record.getMessage() for record in records
        if record.name.startswith("asgi_metrics") and text in record.getMessage()
    ]

"""Native (sparse, exponential-bucket) histograms: the recording side.

A native histogram series has no fixed bucket list: bucket ``i`` of schema ``s`` covers
``(2**(2**-s*(i-1)), 2**(2**-s*i)]``, so each bucket is a constant factor ``2**(2**-s)``
wider than the one below it and one series gives every quantile to within that factor.
Only non-empty buckets are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class NativeSeries:
    """One native histogram series, summed over shards (what a scrape exposes)."""

    #: Prometheus schema (-4..8); bucket i covers (2**(2**-schema*(i-1)), 2**(2**-schema*i)].
    schema: int
    #: Observations with ``abs(v) <= zero_threshold`` are in the zero bucket.
    zero_threshold: float
    zero_count: int
    #: Total observations (== the classic ``+Inf`` cumulative count).
    count: int
    sum: float
    #: Bucket index -> count (NOT cumulative); only non-empty buckets.
    positive: dict[int, int] = field(default_factory=dict)

"""Native (sparse, exponential-bucket) histograms: the recording side.

A native histogram series has no fixed bucket list: bucket ``i`` of schema ``s`` covers
``(2**(2**-s*(i-1)), 2**(2**-s*i)]``, so each bucket is a constant factor ``2**(2**-s)``
wider than the one below it and one series gives every quantile to within that factor.
Only non-empty buckets are kept. Observations at most the zero threshold (and 0) go into
a separate zero bucket.

The bucket of a value is found as client_golang does (``prometheus/histogram.go``): split
the value into ``frac * 2**exp`` (``math.frexp``, exact), find ``frac`` in a small table of
the bucket bounds within one power of two (:func:`frac_bounds`), and add ``exp`` times the
buckets per power of two. For schemas below 0 the schema-0 index is divided by
``2**-schema`` (rounding up). :class:`Bucketing` folds both cases into one formula, so the
request path has no branch on the schema.

A series that would hold more than ``max_buckets`` buckets halves its resolution (schema
- 1, each bucket pair merged into one, as client_golang's ``doubleBucketWidth``);
:func:`merge` does the same when series of several shards or processes are summed.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

#: The schemas Prometheus accepts for exponential buckets.
SCHEMA_MIN = -4
SCHEMA_MAX = 8
#: client_golang's ``DefNativeHistogramZeroThreshold``.
DEFAULT_ZERO_THRESHOLD = 2.0**-128


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


def pick_schema(bucket_factor: float) -> int:
    """The largest schema whose bucket factor ``2**(2**-schema)`` is at most
    ``bucket_factor``, clamped to -4..8 (client_golang's ``pickSchema``)."""
    if not bucket_factor > 1:
        raise ValueError(f"bucket factor {bucket_factor!r} is not greater than 1")
    floor = math.floor(math.log2(math.log2(bucket_factor)))
    return max(SCHEMA_MIN, min(SCHEMA_MAX, -floor))


#: ``2**(2**-schema)`` for schemas 0..8 as client_golang's table was generated with (Go's
#: ``math.Exp2``): Python's ``2.0 ** 0.5`` is one unit in the last place above Go's
#: ``Exp2(0.5)``, every other factor is the same float. With these the bounds below are
#: bit for bit client_golang's (and Prometheus') ``nativeHistogramBounds``.
_FACTORS = (2.0, 1.414213562373095, *(2.0 ** (2.0**-schema) for schema in range(2, 9)))


@cache
def frac_bounds(schema: int) -> tuple[float, ...]:
    """The bucket bounds within ``[0.5, 1)`` of schema ``max(schema, 0)``: the
    ``2**schema`` values ``0.5 * 2**(j * 2**-schema)``, each second one taken from the
    schema below (as client_golang generates ``nativeHistogramBounds``, for the same
    floating-point values)."""
    if schema <= 0:
        return (0.5,)
    below = frac_bounds(schema - 1)
    factor = _FACTORS[schema]
    bounds = [0.5]
    for j in range(2**schema - 1):
        bounds.append(below[j // 2 + 1] if (j + 1) % 2 == 0 else bounds[j] * factor)
    return tuple(bounds)


class Bucketing:
    """The constants of one schema's bucket index:
    ``(bisect_left(bounds, frac) + exp * mult + add) >> shift`` for ``frexp(v) == (frac,
    exp)``."""

    __slots__ = ("add", "bounds", "mult", "schema", "shift")

    def __init__(self, schema: int) -> None:
        self.schema = schema
        self.bounds = frac_bounds(schema)
        if schema >= 0:
            # index = bisect + (exp - 1) * 2**schema
            self.mult = len(self.bounds)
            self.add = -self.mult
            self.shift = 0
        else:
            # the schema-0 index (bisect + exp - 1), divided by 2**-schema rounding up
            self.mult = 1
            self.add = -1 + (1 << -schema) - 1
            self.shift = -schema

    def index(self, value: float) -> int:
        """The bucket of ``value`` (> 0, finite)."""
        frac, exp = math.frexp(value)
        return (bisect_left(self.bounds, frac) + exp * self.mult + self.add) >> self.shift


BUCKETINGS = {schema: Bucketing(schema) for schema in range(SCHEMA_MIN, SCHEMA_MAX + 1)}


def bucket_index(value: float, schema: int) -> int:
    """The bucket of ``value`` in ``schema``; ``+Inf`` goes one above the bucket of the
    largest float (client_golang's convention)."""
    if value == math.inf:
        return BUCKETINGS[schema].index(1.7976931348623157e308) + 1
    return BUCKETINGS[schema].index(value)


def upper_bound(index: int, schema: int) -> float:
    """The upper bound of bucket ``index`` of ``schema`` (exact where the value is)."""
    if schema < 0:
        exp = index << -schema
        return math.inf if exp > 1024 else math.ldexp(1.0, exp)
    bounds = frac_bounds(schema)
    frac = bounds[index & ((1 << schema) - 1)]
    exp = (index >> schema) + 1
    try:
        return math.ldexp(frac, exp)
    except OverflowError:
        return math.inf


def reduce(buckets: Iterable[tuple[int, int]], by: int) -> dict[int, int]:
    """``buckets`` at a schema ``by`` lower: bucket ``i`` goes into ``ceil(i / 2**by)``,
    the wider bucket that contains it."""
    if by <= 0:
        return dict(buckets)
    add = (1 << by) - 1
    reduced: dict[int, int] = {}
    for index, count in buckets:
        wide = (index + add) >> by
        reduced[wide] = reduced.get(wide, 0) + count
    return reduced


def capped(schema: int, buckets: dict[int, int], max_buckets: int) -> tuple[int, dict[int, int]]:
    """Halve the resolution of ``buckets`` until at most ``max_buckets`` are left (or the
    schema is -4)."""
    while len(buckets) > max_buckets and schema > SCHEMA_MIN:
        schema -= 1
        buckets = reduce(buckets.items(), 1)
    return schema, buckets


def merge(parts: Iterable[NativeSeries], max_buckets: int) -> NativeSeries | None:
    """The sum of ``parts`` (shards, processes): at their smallest schema, the zero bucket
    of the widest threshold, then capped at ``max_buckets``; ``None`` without parts."""
    parts = list(parts)
    if not parts:
        return None
    schema = min(part.schema for part in parts)
    threshold = max(part.zero_threshold for part in parts)
    zero = 0
    positive: dict[int, int] = {}
    for part in parts:
        zero += part.zero_count
        for index, count in reduce(part.positive.items(), part.schema - schema).items():
            if upper_bound(index, schema) <= threshold:
                zero += count  # inside the widest zero bucket
            else:
                positive[index] = positive.get(index, 0) + count
    schema, positive = capped(schema, positive, max_buckets)
    return NativeSeries(
        schema=schema,
        zero_threshold=threshold,
        zero_count=zero,
        count=sum(part.count for part in parts),
        sum=sum(part.sum for part in parts),
        positive=positive,
    )

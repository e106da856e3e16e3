"""Native histogram bucketing (asgi_metrics/core/native.py) against client_golang's
definitions: its bucket bounds (``nativeHistogramBounds`` in prometheus/histogram.go), its
schema choice (``pickSchema``), its halving (``doubleBucketWidth``), and the sum of series
of different schemas."""

from __future__ import annotations

import math
import random

import pytest

from asgi_metrics.core.native import (
    SCHEMA_MAX,
    SCHEMA_MIN,
    NativeSeries,
    bucket_index,
    capped,
    frac_bounds,
    merge,
    pick_schema,
    reduce,
    upper_bound,
)

# client_golang's nativeHistogramBounds for schemas 1 to 3, as printed in its source.
GO_BOUNDS = {
    1: (0.5, 0.7071067811865475),
    2: (0.5, 0.5946035575013605, 0.7071067811865475, 0.8408964152537144),
    3: (
        0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
        0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711,
    ),
}


@pytest.mark.parametrize("schema", sorted(GO_BOUNDS))
def test_bounds_are_client_golangs_bit_for_bit(schema: int) -> None:
    assert frac_bounds(schema) == GO_BOUNDS[schema]


def test_each_schema_holds_the_bounds_of_the_one_below() -> None:
    for schema in range(1, SCHEMA_MAX + 1):
        assert frac_bounds(schema)[::2] == frac_bounds(schema - 1)
        assert len(frac_bounds(schema)) == 2**schema


@pytest.mark.parametrize(
    ("factor", "schema"),
    [
        (1.1, 3),  # the default: factor 2**(2**-3) = 1.0905...
        (1.0905077326652577, 3),  # exactly schema 3's factor
        (1.09, 4),
        (2.0, 0),
        (3.9, 0),
        (4.0, -1),
        (65536.0, -4),
        (1e300, -4),  # clamped
        (1.0001, 8),
        (1.000000001, 8),  # clamped
    ],
)
def test_schema_from_bucket_factor(factor: float, schema: int) -> None:
    assert pick_schema(factor) == schema


def test_schema_3_buckets_on_client_golangs_boundaries() -> None:
    # Bucket i of schema 3 is (2**((i-1)/8), 2**(i/8)]: a bound is in its bucket, the next
    # float above it in the next one.
    for index in range(-80, 81):
        bound = upper_bound(index, 3)
        assert bound == math.ldexp(GO_BOUNDS[3][index % 8], index // 8 + 1)
        assert bucket_index(bound, 3) == index
        assert bucket_index(math.nextafter(bound, math.inf), 3) == index + 1
        assert bucket_index(math.nextafter(bound, 0.0), 3) == index
    assert bucket_index(1.0, 3) == 0
    assert bucket_index(2.0, 3) == 8
    assert bucket_index(0.5, 3) == -8
    assert bucket_index(1.09, 3) == 1  # just under the first bound above 1, 1.0905...


@pytest.mark.parametrize("schema", range(SCHEMA_MIN, SCHEMA_MAX + 1))
def test_every_value_lies_in_its_bucket(schema: int) -> None:
    rng = random.Random(schema)
    for _ in range(3000):
        value = math.exp(rng.uniform(-60.0, 60.0))
        index = bucket_index(value, schema)
        assert upper_bound(index - 1, schema) < value <= upper_bound(index, schema)
    # Powers of 2**(2**-schema) are bounds: powers of two from schema 0 up.
    step = 1 if schema >= 0 else 2**-schema
    for exponent in range(-40 * step, 41 * step, step):
        index = bucket_index(2.0**exponent, schema)
        assert upper_bound(index, schema) == 2.0**exponent


def test_infinity_goes_above_the_largest_float() -> None:
    for schema in (-4, 0, 3, 8):
        top = bucket_index(1.7976931348623157e308, schema)
        assert bucket_index(math.inf, schema) == top + 1


def test_halving_merges_each_pair_into_the_bucket_containing_it() -> None:
    # ceil(i / 2), as client_golang's doubleBucketWidth ("if key > 0 { key++ }; key /= 2").
    assert reduce({-3: 1, -2: 1, -1: 1, 0: 1, 1: 1, 2: 1, 3: 1}.items(), 1) == {
        -1: 2, 0: 2, 1: 2, 2: 1,
    }
    rng = random.Random(7)
    for _ in range(2000):
        value = math.exp(rng.uniform(-30.0, 30.0))
        for schema in range(SCHEMA_MIN + 1, SCHEMA_MAX + 1):
            for by in range(1, schema - SCHEMA_MIN + 1):
                wide = reduce({bucket_index(value, schema): 1}.items(), by)
                assert wide == {bucket_index(value, schema - by): 1}


def test_cap_halves_until_the_buckets_fit() -> None:
    buckets = {index: 1 for index in range(1, 41)}
    schema, reduced = capped(3, buckets, 10)
    assert schema == 1  # 40 buckets -> 20 -> 10
    assert len(reduced) == 10 and sum(reduced.values()) == 40
    assert capped(3, buckets, 40) == (3, buckets)
    # At schema -4 nothing is left to halve: the series keeps what it has.
    assert capped(-4, {0: 1, 5: 1, 9: 1}, 1)[0] == -4


def _series(values: list[float], schema: int) -> NativeSeries:
    positive: dict[int, int] = {}
    for value in values:
        index = bucket_index(value, schema)
        positive[index] = positive.get(index, 0) + 1
    return NativeSeries(schema, 2.0**-128, 0, len(values), sum(values), positive)


def test_series_of_different_schemas_sum_at_the_smaller_one() -> None:
    rng = random.Random(3)
    fine = [rng.uniform(0.001, 0.01) for _ in range(500)]
    coarse = [rng.uniform(0.001, 5.0) for _ in range(500)]
    merged = merge([_series(fine, 3), _series(coarse, 1)], max_buckets=160)
    assert merged is not None
    assert merged.schema == 1
    assert merged.positive == _series(fine + coarse, 1).positive
    assert merged.count == 1000 and merged.zero_count == 0
    assert math.isclose(merged.sum, sum(fine) + sum(coarse))


def test_the_cap_holds_after_merging() -> None:
    low_values = [1.0 + (i + 1) / 101 for i in range(100)]  # in (1, 2): 8 buckets
    high_values = [1024.0 + (i + 1) * 10 for i in range(100)]  # in (1024, 2048): 8
    low, high = _series(low_values, 3), _series(high_values, 3)
    assert len(low.positive) == 8 and len(high.positive) == 8
    merged = merge([low, high], max_buckets=8)
    assert merged is not None
    assert merged.schema == 2 and len(merged.positive) == 8
    assert merged.positive == _series(low_values + high_values, 2).positive
    assert merged.count == 200

"""M4 downsampling: the pure reference, the DuckDB query, and that they agree."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from waddle.store.downsample import bucket_width, buckets_for, m4, m4_sql

SOURCE = "SELECT x, y FROM points"


def sql_m4(xs: list[Any], ys: list[float], max_points: int) -> tuple[list[Any], list[float]]:
    with duckdb.connect() as con:
        con.execute("CREATE TABLE points (x DOUBLE, y DOUBLE)")
        con.executemany("INSERT INTO points VALUES (?, ?)", list(zip(xs, ys, strict=True)))
        buckets = buckets_for(max_points)
        width = bucket_width(min(xs), max(xs), buckets)
        rows = con.execute(m4_sql(SOURCE), [min(xs), width, buckets - 1]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True)
    )


def test_a_short_series_is_returned_whole_and_sorted() -> None:
    assert m4([3, 1, 2], [30.0, 10.0, 20.0], 10) == ([1, 2, 3], [10.0, 20.0, 30.0])


def test_a_one_step_spike_survives() -> None:
    xs = list(range(100_000))
    ys = [0.0] * len(xs)
    ys[77_777] = 1e6
    ys[12_345] = -1e6
    kept_x, kept_y = m4(xs, ys, 40)
    assert len(kept_x) <= 40
    assert (77_777, 1e6) in zip(kept_x, kept_y, strict=True)
    assert (12_345, -1e6) in zip(kept_x, kept_y, strict=True)
    assert kept_x[0] == 0 and kept_x[-1] == 99_999


def test_nan_and_infinities_are_kept_as_extremes() -> None:
    xs = list(range(1000))
    ys = [float(i % 7) for i in xs]
    ys[500], ys[600], ys[700] = math.nan, math.inf, -math.inf
    for kept_x, kept_y in (m4(xs, ys, 8), sql_m4(xs, ys, 8)):
        points = dict(zip(kept_x, kept_y, strict=True))
        assert math.isnan(points[500])
        assert points[700] == -math.inf


def test_all_points_at_one_x() -> None:
    kept_x, kept_y = m4([5] * 50, [float(i) for i in range(50)], 8)
    assert set(kept_x) == {5} and {0.0, 49.0} <= set(kept_y)


finite = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=60, deadline=None)
@example(points=[(2, 0.0), (3, 0.0), (4, 0.0), (0, 0.0), (1, 0.0)], max_points=4)
@example(points=[(2, 1.0), (3, 1.0), (4, 0.0), (0, 1.0), (1, 0.0)], max_points=4)
@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), finite), min_size=1, max_size=300, unique_by=lambda p: p[0]
    ),
    st.integers(4, 64),
)
def test_m4_properties_and_agreement_with_duckdb(
    points: list[tuple[int, float]], max_points: int
) -> None:
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    kept_x, kept_y = m4(xs, ys, max_points)
    assert kept_x == sorted(kept_x)
    assert set(zip(kept_x, kept_y, strict=True)) <= set(points)
    if len(points) <= max_points:
        assert len(kept_x) == len(points)
    else:
        assert len(kept_x) <= 4 * buckets_for(max_points) <= max_points
        assert min(ys) in kept_y and max(ys) in kept_y
        assert min(xs) in kept_x and max(xs) in kept_x
        sql_x, sql_y = sql_m4(xs, ys, max_points)
        assert [float(x) for x in kept_x] == sql_x and same(kept_y, sql_y)


def test_mismatched_columns() -> None:
    with pytest.raises(ValueError):
        m4([1, 2], [1.0], 4)

"""Shape-keeping downsampling of a series for charts (M4: four points per bucket).

The x range is cut into ``max_points // 4`` equal buckets; each bucket keeps its first,
last, lowest and highest point. A line drawn through what is kept has the same envelope
as one drawn through every point at the chart's resolution: a one-step spike survives
(a stride that keeps every n-th point loses it). NaN and infinities are extremes: DuckDB
orders NaN above every number and so does ``_key`` here, so a bucket holding a NaN keeps
it as its highest point, and a NaN loss shows up on the chart, never silently dropped.

Ties are broken by one rule in both implementations, so that they keep the same points
whatever order the rows arrived in (steps logged out of order are kept, so insertion
order is not x order): every choice is by a total order on (x, y) pairs. The first point
is the lowest y at the smallest x, the last the highest y at the largest x, the lowest
and the highest point each the one with the smallest x among equal y.

``m4`` is the pure reference on Python lists; ``m4_sql`` does the same inside DuckDB,
where a million-point series takes milliseconds. Both return points sorted by x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MIN_POINTS = 4


def buckets_for(max_points: int) -> int:
    return max(1, max_points // 4)


def bucket_width(lo: float, hi: float, buckets: int) -> float:
    """The x width of one bucket (1 when every point has the same x)."""
    return (hi - lo) / buckets if hi > lo else 1.0


def bucket_of(x: float, lo: float, width: float, buckets: int) -> int:
    """The bucket of ``x``, computed as ``m4_sql`` does: floor((x - lo) / width), capped."""
    return min(math.floor((x - lo) / width), buckets - 1)


def _key(y: float) -> tuple[int, float]:
    """Order y like DuckDB does: numbers by value, NaN above +Infinity."""
    return (1, 0.0) if math.isnan(y) else (0, y)


def m4(x: Sequence[float], y: Sequence[float], max_points: int) -> tuple[list[Any], list[Any]]:
    """The M4 points of (x, y); the series unchanged when it has at most ``max_points``."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    order = sorted(range(len(x)), key=lambda i: x[i])
    if len(order) <= max_points:
        return [x[i] for i in order], [y[i] for i in order]
    lo, hi = x[order[0]], x[order[-1]]
    count = buckets_for(max_points)
    width = bucket_width(lo, hi, count)
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(bucket_of(x[i], lo, width, count), []).append(i)
    keep: set[int] = set()
    for members in groups.values():
        keep.update(
            (
                min(members, key=lambda i: (x[i], _key(y[i]))),
                max(members, key=lambda i: (x[i], _key(y[i]))),
                min(members, key=lambda i: (_key(y[i]), x[i])),
                max(members, key=lambda i: (_key(y[i]), -x[i])),
            )
        )
    points = {(x[i], _key(y[i])): i for i in keep}
    kept = [points[point] for point in sorted(points)]
    return [x[i] for i in kept], [y[i] for i in kept]


def m4_sql(source: str) -> str:
    """A query over ``source`` (a subquery with columns ``x``, ``y``) giving its M4 points.

    Parameters, in order: ``lo`` (the smallest x), the bucket width and the last bucket
    number (``buckets - 1``), then ``source``'s own. The caller knows ``lo`` and ``hi``
    from a cheap first query (it needs the count anyway); passing them in as constants
    keeps this to one scan with an integer group key.
    """
    return f"""
WITH a AS (
    SELECT least(CAST(floor((x - ?) / ?) AS BIGINT), ?) AS k,
        min(x) AS x0, arg_min(y, (x, y)) AS y0,
        max(x) AS x1, arg_max(y, (x, y)) AS y1,
        arg_min(x, (y, x)) AS x2, min(y) AS y2,
        arg_max(x, (y, -x)) AS x3, max(y) AS y3
    FROM ({source}) GROUP BY k
)
SELECT DISTINCT x, y FROM (
    SELECT x0 AS x, y0 AS y FROM a UNION ALL
    SELECT x1, y1 FROM a UNION ALL
    SELECT x2, y2 FROM a UNION ALL
    SELECT x3, y3 FROM a
) ORDER BY x, y
"""

"""Events into columns: the fast numeric path, the slow path, and the code dictionary."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from waddle.consumers.duckdb import columns as columns_module
from waddle.consumers.duckdb.columns import (
    Codes,
    LongColumns,
    RowColumns,
    as_number,
    flatten,
    to_json,
)


def event(step: int, data: dict[str, Any], ts: float = 1.0) -> dict[str, Any]:
    return {"seq": step, "ts": ts + step, "type": "metrics", "step": step, "data": data}


def rows(columns: LongColumns) -> list[tuple[Any, ...]]:
    arrays = columns.arrays()
    names = {code: name for name, code in columns.names.codes.items()}
    return [
        (names[r], names[k], int(a), float(t), "NaN" if nan else float(v))
        for r, k, a, t, v, nan in zip(
            arrays["run"],
            arrays["key"],
            arrays["axis"],
            arrays["ts"],
            arrays["value"],
            arrays["nan"],
            strict=True,
        )
    ]


def test_flatten_and_numbers() -> None:
    assert list(flatten({"a": {"b": {"c": 1}, "d": {}}, "e": 2})) == [
        ("a.b.c", 1),
        ("a.d", {}),
        ("e", 2),
    ]
    assert as_number(3) == 3.0 and as_number(math.inf) == math.inf
    assert as_number(True) is None and as_number("1.5") is None and as_number(None) is None
    assert as_number(10**400) is None
    assert to_json({"x": math.nan, "y": [math.inf]}) == '{"x":"NaN","y":["Infinity"]}'


def test_the_fast_path_keeps_order_and_codes() -> None:
    columns = LongColumns(Codes())
    columns.add("run", [event(0, {"a": 1.5, "b": 2}), event(1, {"b": math.nan})], "step")
    columns.add("other", [event(5, {"a": -math.inf})], "step")
    assert rows(columns) == [
        ("run", "a", 0, 1.0, 1.5),
        ("run", "b", 0, 1.0, 2.0),
        ("run", "b", 1, 2.0, "NaN"),
        ("other", "a", 5, 6.0, -math.inf),
    ]
    assert columns.rows == 4


def test_the_slow_path_splits_numbers_from_the_rest() -> None:
    others: list[tuple[Any, ...]] = []
    columns = LongColumns(Codes())
    columns.add("run", [event(3, {"a": {"b": 1}, "s": "x", "f": True, "n": None})], "step", others)
    assert rows(columns) == [("run", "a.b", 3, 4.0, 1.0)]
    assert others == [
        ("run", "s", 3, 4.0, '"x"'),
        ("run", "f", 3, 4.0, "true"),
        ("run", "n", 3, 4.0, "null"),
    ]


def test_a_constant_axis_and_dropped_non_numbers() -> None:
    columns = LongColumns(Codes())
    sample = {"seq": 0, "ts": 2.0, "type": "system", "data": {"cpu": 5, "name": "gpu"}}
    columns.add("run", [sample], 4)
    assert rows(columns) == [("run", "cpu", 4, 2.0, 5.0)]


def test_row_columns() -> None:
    table = RowColumns(("a", "b"))
    table.append((1, "x"))
    table.append((None, "y"))
    arrays = table.arrays()
    assert list(arrays["a"]) == [1, None] and list(arrays["b"]) == ["x", "y"]
    assert {k: len(v) for k, v in RowColumns(("a",)).arrays().items()} == {"a": 0}


values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
datas = st.dictionaries(
    st.text("abc", min_size=1, max_size=2),
    st.one_of(values, st.dictionaries(st.text("xy", min_size=1, max_size=1), values)),
    max_size=4,
)


@given(st.lists(datas, max_size=6))
def test_every_value_lands_once_as_a_number_or_as_json(batch: list[dict[str, Any]]) -> None:
    others: list[tuple[Any, ...]] = []
    columns = LongColumns(Codes())
    columns.add("run", [event(i, d) for i, d in enumerate(batch)], "step", others)
    expected_numbers = []
    expected_others = []
    for step, data in enumerate(batch):
        for key, value in flatten(data):
            number = as_number(value)
            if number is None:
                expected_others.append((key, step))
            else:
                expected_numbers.append((key, step, "NaN" if math.isnan(number) else number))
    got = [(k, a, v) for _, k, a, _, v in rows(columns)] if columns.rows else []
    assert got == expected_numbers
    assert [(k, a) for _, k, a, _, _ in others] == expected_others
    assert columns.rows == len(expected_numbers)


floats = st.floats(allow_nan=True, allow_infinity=True)
batches = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2"]),
        st.lists(st.dictionaries(st.text("ab", min_size=1, max_size=2), floats), max_size=5),
        st.booleans(),  # an int among the values: the numpy path
    ),
    max_size=6,
)


def gathered(made: list[tuple[str, list[dict[str, Any]], bool]], small: int) -> Any:
    saved, columns_module.SMALL_BATCH = columns_module.SMALL_BATCH, small
    try:
        columns = LongColumns(Codes())
        tops = [
            columns.add(
                run,
                [event(i, {**d, **({"i": 7} if ints else {})}) for i, d in enumerate(data)],
                "step",
            )
            for run, data, ints in made
        ]
        return rows(columns) if columns.rows else [], tops, columns.rows
    finally:
        columns_module.SMALL_BATCH = saved


@given(batches)
def test_small_batches_gathered_as_lists_give_the_same_rows_in_order(
    made: list[tuple[str, list[dict[str, Any]], bool]],
) -> None:
    """A central host adds thousands of 10-event batches a round: those of floats are
    gathered as lists and made arrays once, with the rows, order and steps of numpy's."""
    assert gathered(made, 64) == gathered(made, 0)


def test_a_small_batch_with_a_step_beyond_bigint_still_raises_when_added() -> None:
    """The writer quarantines such an event when ``add`` raises (not when rows ship)."""
    with pytest.raises(OverflowError):
        LongColumns(Codes()).add("run", [event(2**63, {"a": 1.0})], "step")

"""The writer's statements: rows replaced by key, whatever mix of values they carry."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest

from waddle.consumers.duckdb import fold
from waddle.consumers.duckdb.inserts import run_values, upsert_all
from waddle.consumers.duckdb.writer import REFUSED
from waddle.store import schema as store


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    return store.connect(":memory:")


def run(run_id: str, **fields: Any) -> list[Any]:
    return run_values(fold.RunRow(run_id, **fields))


def test_runs_are_replaced_by_key_whatever_their_values(con: duckdb.DuckDBPyConnection) -> None:
    first = [run("a", started_at=1, tags=[]), run("b", started_at=1.5, tags=["x", "y"])]
    upsert_all(con, runs=first, streams=[], offsets=[])
    again = [
        run("b", name="é", exit_code=2**62, last_step=-5, config={"lr": 0.1}, tags=["z"]),
        run("c", updated_at=3),
    ]
    upsert_all(con, runs=again, streams=[], offsets=[["s", 0, 10, 4]])
    rows = con.execute(
        "SELECT run_id, name, started_at, exit_code, last_step, updated_at, tags, config "
        "FROM runs ORDER BY run_id"
    ).fetchall()
    assert rows == [
        ("a", None, 1.0, None, None, None, [], "{}"),
        ("b", "é", None, 2**62, -5, None, ["z"], '{"lr":0.1}'),
        ("c", None, None, None, None, 3.0, [], "{}"),
    ]
    assert con.execute("SELECT * FROM _waddle.offsets").fetchall() == [("s", 0, 10, 4)]


def test_thousands_of_runs_in_one_commit(con: duckdb.DuckDBPyConnection) -> None:
    runs = [
        run(f"r{i}", last_step=i, updated_at=i if i < 2000 else i + 0.5, tags=["t"] * (i % 3))
        for i in range(3000)
    ]
    upsert_all(con, runs=runs, streams=[], offsets=[])
    upsert_all(con, runs=runs[::2], streams=[], offsets=[])
    found = con.execute("SELECT count(*), sum(last_step), sum(len(tags)) FROM runs").fetchone()
    assert found == (3000, sum(range(3000)), 3000)
    assert con.execute("SELECT updated_at FROM runs WHERE run_id = 'r2999'").fetchone() == (2999.5,)


def test_a_value_duckdb_cannot_hold_is_refused(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(REFUSED):
        upsert_all(con, runs=[run("a", exit_code=2**70)], streams=[], offsets=[])

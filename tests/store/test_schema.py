"""The store: schema, opening (locks, read-only, the snapshot fallback) and read queries."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.consumers.logs import open_stream, run_fields, write_run
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.errors import StoreLockedError, UsageError
from waddle.store import queries
from waddle.store import schema as store

HOLD = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """A database file that another process holds open for writing."""
    path = tmp_path / "w" / "waddle.duckdb"
    path.parent.mkdir()
    store.connect(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    yield path
    holder.communicate(b"", timeout=30)


@pytest.fixture
def built(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    write_run(root, "old", 3, started_at=1000.0, project="a")
    write_run(root, "new", 250, started_at=2000.0, project="b", finish=None)
    writer = open_stream(root, "nan")
    writer.append("run", run_fields("nan", started_at=1500.0))
    for step in range(3):
        writer.append("metrics", {"step": step, "data": {"loss": [1.0, math.nan, math.inf][step]}})
    writer.close()
    run_consumer(DuckDBWriter(root), root, threading.Event(), once=True)
    return root / "waddle.duckdb"


def test_the_schema_is_created_once(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    for _ in range(2):
        con = store.connect(path)
        con.close()
    with store.connect(path, read_only=True) as con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        version = con.execute("SELECT value FROM _waddle.meta").fetchall()
    assert {
        "runs",
        "streams",
        "metrics",
        "logged_values",
        "system",
        "console",
        "artifacts",
    } <= tables
    assert version == [(str(store.SCHEMA_VERSION),)]


def test_a_writer_waits_then_names_the_holder(held: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "_LOCK_RETRY_S", 0.3)
    with pytest.raises(StoreLockedError, match="one writer per file"):
        store.connect(held)


def test_a_missing_database_names_the_remedy(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="waddle-consume --dir"):
        store.open_reader(tmp_path / "waddle.duckdb")


def test_readers_fall_back_to_the_snapshot_while_a_writer_holds_the_file(held: Path) -> None:
    with pytest.raises(StoreLockedError):
        store.open_reader(held)
    with duckdb.connect() as con:
        con.execute("CREATE TABLE runs AS SELECT * FROM (VALUES ('x', 1.0)) t(run_id, started_at)")
        store.publish_snapshot(con, held)
    with store.open_reader(held) as reader:
        assert reader.from_snapshot
        assert reader.con.execute("SELECT run_id FROM runs").fetchall() == [("x",)]


def test_list_and_get_runs(built: Path) -> None:
    with store.open_reader(built) as reader:
        assert not reader.from_snapshot
        runs = queries.list_runs(reader.con)
        assert [r["run_id"] for r in runs] == ["new", "nan", "old"]
        assert [r["run_id"] for r in queries.list_runs(reader.con, project="a")] == ["old"]
        old = runs[2]
        assert old["status"] == "finished" and old["last_step"] == 2
        assert old["duration"] == pytest.approx(old["finished_at"] - 1000.0)
        assert runs[0]["status"] == "running" and runs[0]["duration"] > 0
        run = queries.get_run(reader.con, "old")
        assert run is not None and run["config"] == {"lr": 0.1} and run["summary"] == {"steps": 3}
        assert queries.get_run(reader.con, "missing") is None


def test_metric_keys_and_series(built: Path) -> None:
    with store.open_reader(built) as reader:
        assert queries.metric_keys(reader.con, "new") == ["acc", "loss", "lr"]
        steps, _, count = queries.metric_series(reader.con, "new", "loss", "step", 10_000)
        assert steps == list(range(250)) and count == 250
        thin, _, count = queries.metric_series(reader.con, "new", "loss", "step", 50)
        assert count == 250 and 4 <= len(thin) <= 50
        assert thin[0] == 0 and thin[-1] == 249 and thin == sorted(thin)
        _, values, _ = queries.metric_series(reader.con, "nan", "loss", "step", 100)
        assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == math.inf
        with pytest.raises(UsageError):
            queries.metric_series(reader.con, "new", "loss", "step", 1)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_metrics(built: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"out.{fmt}"
    with store.open_reader(built) as reader:
        assert queries.export_metrics(reader.con, "nan", target, fmt) == 3
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT key, step, value FROM '{target}' ORDER BY step").fetchall()
    assert [(k, s) for k, s, _ in rows] == [("loss", 0), ("loss", 1), ("loss", 2)]
    assert math.isnan(rows[1][2]) and rows[2][2] == math.inf
    with store.open_reader(built) as reader, pytest.raises(UsageError):
        queries.export_metrics(reader.con, "nan", target, "xlsx")

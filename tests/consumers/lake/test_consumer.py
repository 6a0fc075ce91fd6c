"""The lake consumer run as ``waddle-consume --consumer lake --lake DIR``: what a real
producer logged reaches the lake once, equal to the DuckDB writer's tables, and a run
that finishes again replaces its files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from tests.consumers.lake.lakes import HERE, checksums, consume, export, files
from tests.consumers.logs import CONSUME, numbers, write_run
from waddle.consumers.lake.consumer import LakeConsumer
from waddle.store.lake import TABLES

LOAD = HERE.parent / "load.py"


def test_a_real_producers_runs_equal_the_duckdb_writers_tables(tmp_path: Path) -> None:
    root, lake = tmp_path / "w", tmp_path / "lake"
    subprocess.run(
        [sys.executable, str(LOAD), str(root), "3", "1500", str(64 * 1024), "500", "0"],
        check=True,
        timeout=120,
    )
    export(root, lake)
    consume(root)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert len(found["lake"]["runs"]) == 3
    # loss, acc and opt.lr at every step (load.payload)
    assert sum(n for n, _ in found["lake"]["metrics"].values()) == 3 * 1500 * 3
    for table in TABLES:  # one file per table and run, in the hive layout; none if no rows
        expected = 3 if table in ("runs", "streams", "metrics", "logged_values", "summary") else 0
        assert (
            len(list((lake / table).glob("project=load/run_id=load*/part-*.parquet"))) == expected
        )


def test_the_lake_reads_back_with_hive_partitions(tmp_path: Path) -> None:
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "r1", 5, project="vision/cnn v2", config={"lr": 0.1, "depth": 4})
    export(root, lake)
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT project, run_id, key, sum(value) FROM read_parquet('{lake}/metrics/**/*.parquet',"
        " hive_partitioning = true) GROUP BY ALL ORDER BY key"
    ).fetchall()
    expected = {k: sum(numbers(s)[k] for s in range(5)) for k in ("acc", "loss", "lr")}
    assert rows == [("vision/cnn v2", "r1", k, expected[k]) for k in sorted(expected)]
    config = con.execute(
        f"SELECT key, value::VARCHAR FROM read_parquet('{lake}/config/*/*/*.parquet') ORDER BY 1"
    ).fetchall()
    assert config == [("depth", "4"), ("lr", "0.1")]


def test_live_runs_wait_and_a_run_finished_again_replaces_its_files(tmp_path: Path) -> None:
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "done", 3)
    write_run(root, "live", 4, finish=None)
    export(root, lake)
    assert {p.name for p in (lake / "runs" / "project=proj").iterdir()} == {"run_id=done"}

    write_run(root, "live", 2, first_step=4, resume=True)  # now it finishes
    write_run(root, "done", 5, first_step=3, resume=True)  # resumed, finished again
    export(root, lake)
    consume(root)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert found["lake"]["metrics"]["done/loss"][0] == 8
    assert found["lake"]["metrics"]["live/loss"][0] == 6
    assert len([f for f in files(lake) if f.startswith("metrics/")]) == 2


def test_an_export_found_complete_is_not_redone(tmp_path: Path) -> None:
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "r1", 3)
    export(root, lake)
    before = {f: (lake / f).stat().st_mtime_ns for f in files(lake)}
    consumer = LakeConsumer(root, lake)
    consumer.start({})
    try:
        with consumer.writer.cursor() as con:  # as if killed after the renames
            con.execute("DELETE FROM _lake.exported")
    finally:
        consumer.close()
    again = LakeConsumer(root, lake)
    again.start({})
    again.close()
    assert again.exported == 0
    assert {f: (lake / f).stat().st_mtime_ns for f in files(lake)} == before


def test_lake_without_the_lake_consumer_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CONSUME, "--dir", str(tmp_path), "--once", "--lake", str(tmp_path / "lake")],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"--consumer lake" in done.stderr


def test_a_rank_finishing_after_the_lead_exports_the_run_again(tmp_path: Path) -> None:
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "ddp", 3)
    write_run(root, "ddp", 2, rank=1, finish=None)
    export(root, lake)
    write_run(root, "ddp", 4, rank=1, first_step=2, resume=True)
    export(root, lake)
    consume(root)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert found["lake"]["metrics"]["ddp/loss"][0] == 3 + 6


def test_two_writers_share_one_lake_each_with_its_own_files(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    for host in ("a", "b"):
        write_run(tmp_path / host, f"run-{host}", 3)
        export(tmp_path / host, lake)
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT run_id, count(*) FROM read_parquet('{lake}/metrics/*/*/*.parquet', "
        "hive_partitioning = true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [("run-a", 9), ("run-b", 9)]
    writers = {path.name for path in lake.glob("metrics/*/*/*.parquet")}
    assert len(writers) == 2

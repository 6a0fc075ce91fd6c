"""The lake's layout and ``LakeViews``: paths stay inside the lake, and the views show a
store plus a lake (the store's rows win) to the unchanged read queries."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from waddle.errors import InvalidIdError
from waddle.store import queries
from waddle.store import schema as store
from waddle.store.lake import NULL_PARTITION, LakeViews, literal, partition_dir


@pytest.mark.parametrize("run_id", ["../x", "..", "a/b", "", ".hidden", "x" * 129])
def test_an_invalid_run_id_names_no_partition(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(InvalidIdError):
        partition_dir(tmp_path, "runs", "p", run_id)


@pytest.mark.parametrize("project", ["../..", "a/../../b", "/etc", "..", "p=q", "x%2Fy"])
def test_a_project_is_one_path_component(tmp_path: Path, project: str) -> None:
    folder = partition_dir(tmp_path, "runs", project, "r1")
    assert folder.parent.parent == tmp_path / "runs"
    assert folder.parent.name.startswith("project=") and "/" not in folder.parent.name[8:]


def _lake_run(con: duckdb.DuckDBPyConnection, lake: Path, run_id: str, project: str | None) -> None:
    """Write ``run_id``'s rows of the store behind ``con`` into the lake, as the consumer
    does (partition columns in the path only), then drop them from the store."""
    for table in ("runs", "metrics"):
        folder = partition_dir(lake, table, project, run_id)
        folder.mkdir(parents=True)
        drop = "run_id, project" if table == "runs" else "run_id"
        con.execute(
            f"COPY (SELECT * EXCLUDE ({drop}) FROM {table} WHERE run_id = ?) "
            f"TO {literal(folder / 'part-w.parquet')} (FORMAT parquet)",
            [run_id],
        )
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])


def _runs(con: duckdb.DuckDBPyConnection) -> None:
    for run_id, project, steps in (("here", "p", 3), ("there", None, 2), ("both", "p", 4)):
        con.execute(
            "INSERT INTO runs (run_id, project, status, last_step) VALUES (?, ?, 'finished', ?)",
            [run_id, project, steps - 1],
        )
        for step in range(steps):
            con.execute(
                "INSERT INTO metrics VALUES (?, 'loss', ?, 0.0, ?)", [run_id, step, float(step)]
            )


def test_views_show_the_store_plus_the_lake(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    con = store.connect(tmp_path / "waddle.duckdb")
    _runs(con)
    _lake_run(con, lake, "there", None)
    _lake_run(con, lake, "both", "p")
    con.execute(
        "INSERT INTO runs (run_id, project, status, last_step) VALUES ('both', 'p', 'running', 0)"
    )
    con.execute("INSERT INTO metrics VALUES ('both', 'loss', 0, 0.0, 7.0)")
    views = LakeViews(lake)
    cursor = views.prepare(con.cursor())
    listed = {row["run_id"]: row for row in queries.list_runs(cursor)}
    assert set(listed) == {"here", "there", "both"}
    assert listed["there"]["project"] is None  # stored as NULL_PARTITION, read as null
    assert listed["both"]["status"] == "running"  # the store's run wins
    assert queries.metric_keys(cursor, "there") == ["loss"]
    assert cursor.execute("SELECT value FROM metrics WHERE run_id = 'both'").fetchall() == [(7.0,)]
    assert cursor.execute("SELECT count(*) FROM metrics").fetchall() == [(3 + 2 + 1,)]
    assert (lake / "runs" / f"project={NULL_PARTITION}").is_dir()
    plain = con.cursor()  # another cursor of the store is left as it was
    assert plain.execute("SELECT count(*) FROM runs").fetchall() == [(2,)]
    con.close()


def test_a_table_with_no_lake_files_yet_is_the_stores_until_one_appears(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    con = store.connect(tmp_path / 'team\'s "runs"-db.duckdb')  # the catalog takes its name
    _runs(con)
    views = LakeViews(lake)
    assert len(queries.list_runs(views.prepare(con.cursor()))) == 3
    _lake_run(con, lake, "there", "q")
    assert len(queries.list_runs(views.prepare(con.cursor()))) == 3
    assert {p["name"] for p in queries.projects(views.prepare(con.cursor()))} == {"p", "q"}
    con.close()

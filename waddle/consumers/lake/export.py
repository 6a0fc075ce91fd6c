"""Writing finished runs into the Parquet lake, so that no reader sees half of a run.

Runs are exported in batches. A batch's files are first written under
``<lake>/_staging/<writer>/`` (outside every table's folder, so no glob of the lake reads
them), one DuckDB ``COPY ... PARTITION_BY`` per table for the whole batch. Once they are
synced to disk they are renamed into their partitions run by run, the ``runs`` file of a
run after its other tables (``waddle.store.lake.STORE_TABLES``), and the renames are
synced. A rename replaces the writer's earlier file of that run and table, so a run
exported again is replaced, not doubled. A table in which a run has no rows gets no file
(rows of a run are never removed, so no stale file of it can remain).

Guarantees: a process killed mid-export leaves staged files (removed at the next start,
``clear_staging``) and possibly some tables of a run in place without its ``runs`` file;
the next export of the run replaces them. An export whose ``runs`` file holds the
store's row of the run (which changes with every event of the run) is current
(``current``) and need not be redone. Nothing here decides *when* a run is exported:
that is the consumer's (``waddle.consumers.lake.consumer``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from waddle.store.lake import (
    DERIVED_TABLES,
    PARTITION_COLUMNS,
    TABLES,
    literal,
    partition_dir,
)

STAGING = "_staging"
# (run id, project, fingerprint) of one finished run.
Run = tuple[str, str | None, str]


def staging_dir(lake: Path, writer: str) -> Path:
    return lake / STAGING / writer


def clear_staging(lake: Path, writer: str) -> None:
    """Remove what a killed export of this writer left half-written."""
    shutil.rmtree(staging_dir(lake, writer), ignore_errors=True)


def file_name(writer: str, index: int = 0) -> str:
    """A writer's file in a partition (one, unless DuckDB split a very large one)."""
    return f"part-{writer}.parquet" if index == 0 else f"part-{writer}-{index}.parquet"


class Exporter:
    """Exports batches of runs from a store (the consumer's scratch database) to a lake."""

    def __init__(self, con: duckdb.DuckDBPyConnection, lake: Path, writer: str) -> None:
        self.lake = lake
        self.writer = writer
        self.selects = {table: _select(con, table) for table in TABLES}
        self.columns = _columns(con, "runs")

    def current(self, con: duckdb.DuckDBPyConnection, runs: list[Run]) -> set[str]:
        """The ``runs`` whose export in the lake is as the store has them now: their
        ``runs`` file holds the store's row, which changes with every event of the run."""
        files = {
            run_id: partition_dir(self.lake, "runs", project, run_id) / file_name(self.writer)
            for run_id, project, _ in runs
        }
        found = [str(path) for path in files.values() if path.exists()]
        if not found:
            return set()
        names = ", ".join(f'"{name}"' for name in self.columns)
        rows = con.execute(
            f"SELECT run_id FROM (SELECT run_id, {names} FROM read_parquet($files, "
            "hive_partitioning = true, hive_types = {'project': VARCHAR, 'run_id': VARCHAR}) "
            f"INTERSECT SELECT run_id, {names} FROM runs WHERE run_id IN $ids)",
            {"files": found, "ids": list(files)},
        ).fetchall()
        return {run_id for (run_id,) in rows}

    def export(self, con: duckdb.DuckDBPyConnection, runs: list[Run]) -> None:
        """Write every table's rows of ``runs`` into the lake (see the module)."""
        staged = staging_dir(self.lake, self.writer)
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE lake_batch AS "
            "SELECT (generate_subscripts($ids, 1) - 1)::INTEGER AS i, unnest($ids) AS run_id",
            {"ids": [run[0] for run in runs]},
        )
        for table in TABLES:
            con.execute(
                f"COPY ({self.selects[table]}) TO {literal(staged / table)} "
                "(FORMAT parquet, PARTITION_BY (i), FILENAME_PATTERN 'part')"
            )
        os.sync()  # the staged bytes are on disk before any rename can be
        for index, (run_id, project, _) in enumerate(runs):
            for table in TABLES:
                self._place(staged / table / f"i={index}", table, project, run_id)
        os.sync()
        shutil.rmtree(staged, ignore_errors=True)

    def _place(self, source: Path, table: str, project: str | None, run_id: str) -> None:
        """Rename a run's staged files of ``table`` into its partition."""
        files = sorted(source.glob("*.parquet")) if source.is_dir() else []
        if not files:
            return
        target = partition_dir(self.lake, table, project, run_id)
        target.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(files):
            os.replace(path, target / file_name(self.writer, index))
        for stale in target.glob(f"part-{self.writer}-*.parquet"):
            if stale.name not in {file_name(self.writer, i) for i in range(len(files))}:
                stale.unlink()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of the store's ``table`` that the files hold (not the partitions)."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    return [name for (name,) in rows if name not in PARTITION_COLUMNS]


def _select(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The rows of the batch's runs of ``table``, without partition columns, with ``i``
    (the run's place in the batch)."""
    if table in DERIVED_TABLES:
        return (
            f"SELECT j.key, j.value, b.i FROM runs JOIN lake_batch b USING (run_id), "
            f"json_each(runs.{table}) AS j"
        )
    names = ", ".join(f't."{name}"' for name in _columns(con, table))
    return f"SELECT {names}, b.i FROM {table} t JOIN lake_batch b USING (run_id)"

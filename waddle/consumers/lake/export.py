"""Writing finished runs into the Parquet lake, so that no reader sees half of a run.

Runs are exported in batches. A batch's files are first written under
``<lake>/_staging/<writer>/`` (outside every table's folder, so no glob of the lake reads
them), one DuckDB ``COPY ... PARTITION_BY`` per table for the whole batch. Each staged
file is fsynced, then the batch's files are renamed into their partitions: first every
table but ``runs``, run by run, then the batch's ``runs`` files, each step followed by an
fsync of the folders it changed. So a ``runs`` file is only ever on disk beside its other
tables, and an export whose bytes or renames may not be on disk (an fsync failed: EIO, a
full thin-provisioned or network disk) raises ``StoreError`` before the step that would
build on it, and is not recorded. A rename replaces the writer's earlier file of that
run and table, so a run exported again is replaced, not doubled. A table in which a run
has no rows gets no file (rows of a run are never removed, so no stale file of it can
remain).

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
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb

from waddle.errors import StoreError
from waddle.store.lake import (
    DERIVED_TABLES,
    PARTITION_COLUMNS,
    TABLES,
    literal,
    partition_dir,
)

STAGING = "_staging"
# fsyncs run side by side, so the filesystem commits them together: one by one, a batch's
# thousand files took about ten times as long as the os.sync the export used before
# (which cannot report a failed write); 16 at a time, about as long (bench_lake_sync.py).
SYNC_THREADS = 16
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
        sync(list(staged.rglob("*.parquet")))
        rest = [table for table in TABLES if table != "runs"]
        for tables in (rest, ["runs"]):
            changed: set[Path] = set()
            for index, (run_id, project, _) in enumerate(runs):
                for table in tables:
                    source = staged / table / f"i={index}"
                    changed |= self._place(source, table, project, run_id)
            sync(sorted(changed))
        shutil.rmtree(staged, ignore_errors=True)

    def _place(self, source: Path, table: str, project: str | None, run_id: str) -> set[Path]:
        """Rename a run's staged files of ``table`` into its partition; the folders that
        may have changed (the partition, and those ``mkdir`` may have made)."""
        files = sorted(source.glob("*.parquet")) if source.is_dir() else []
        if not files:
            return set()
        target = partition_dir(self.lake, table, project, run_id)
        target.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(files):
            os.replace(path, target / file_name(self.writer, index))
        for stale in target.glob(f"part-{self.writer}-*.parquet"):
            if stale.name not in {file_name(self.writer, i) for i in range(len(files))}:
                stale.unlink()
        return {target, target.parent, target.parent.parent, self.lake}


def sync(paths: Iterable[Path]) -> None:
    """fsync each of ``paths`` (files or folders), so what follows never builds on bytes
    that may not be on disk; ``StoreError`` if any fails."""
    with ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="waddle-lake-sync") as pool:
        list(pool.map(_fsync, paths))  # raises the first failure, once all are done


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StoreError(
            f"could not write {path} to disk ({exc}); what depends on it is not recorded "
            "and is redone when the consumer next starts: check that disk (full, failing, "
            "read-only)"
        ) from exc


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

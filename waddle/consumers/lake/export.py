"""Writing one finished run into the Parquet lake, so that no reader sees half of it.

A run's files are first written under ``<lake>/_staging/<writer>/<run_id>/`` (outside
every table's folder, so no glob of the lake reads them), fsynced, then renamed into
their partitions, the ``runs`` file last (``waddle.store.lake.STORE_TABLES``). A rename
replaces the writer's earlier file of that run, so a run exported again is replaced, not
doubled. The ``runs`` file carries the run's fingerprint (its status and the finish
time of each stream) in its Parquet metadata: an export whose ``runs`` file already has
the fingerprint is complete and is not redone.

Guarantees: a process killed mid-export leaves staged files (removed at the next start,
``clear_staging``) and possibly some tables of the run in place without its ``runs``
file; the next export of the run replaces them. Nothing here decides *when* a run is
exported: that is the consumer's (``waddle.consumers.lake.consumer``).
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

FINGERPRINT_KEY = "waddle_fingerprint"
STAGING = "_staging"


def staging_dir(lake: Path, writer: str) -> Path:
    return lake / STAGING / writer


def file_name(writer: str) -> str:
    """The name of a writer's file in each partition (one per run, table and writer)."""
    return f"part-{writer}.parquet"


def clear_staging(lake: Path, writer: str) -> None:
    """Remove what a killed export of this writer left half-written."""
    shutil.rmtree(staging_dir(lake, writer), ignore_errors=True)


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """The columns of the store's ``table`` that go into the files (not the partitions)."""
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    return [name for (name,) in rows if name not in PARTITION_COLUMNS]


def _query(con: duckdb.DuckDBPyConnection, table: str) -> str:
    """The rows of one run (parameter ``$run``) of ``table``, without partition columns."""
    if table in DERIVED_TABLES:
        return (
            f"SELECT j.key, j.value FROM runs, json_each(runs.{table}) AS j "
            "WHERE runs.run_id = $run ORDER BY j.key"
        )
    names = ", ".join(f'"{name}"' for name in columns(con, table))
    return f"SELECT {names} FROM {table} WHERE run_id = $run"


def is_exported(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    writer: str,
    run: tuple[str, str | None],
    fingerprint: str,
) -> bool:
    """Whether the lake already holds this writer's export of ``run`` at ``fingerprint``."""
    run_id, project = run
    target = partition_dir(lake, "runs", project, run_id) / file_name(writer)
    if not target.exists():
        return False
    found = con.execute(
        "SELECT decode(value) FROM parquet_kv_metadata(?) WHERE decode(key) = ?",
        [str(target), FINGERPRINT_KEY],
    ).fetchall()
    return found == [(fingerprint,)]


def export(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    writer: str,
    run: tuple[str, str | None],
    fingerprint: str,
) -> None:
    """Write every table's rows of ``run`` (run id, project) into the lake (see module)."""
    run_id, project = run
    targets = [partition_dir(lake, table, project, run_id) for table in TABLES]
    staged = staging_dir(lake, writer) / run_id
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    files = []
    for table in TABLES:
        path = staged / f"{table}.parquet"
        options = "FORMAT parquet"
        if table == "runs":
            options += f", KV_METADATA {{{FINGERPRINT_KEY}: {literal(fingerprint)}}}"
        con.execute(f"COPY ({_query(con, table)}) TO {literal(path)} ({options})", {"run": run_id})
        _fsync(path)
        files.append(path)
    for path, target in zip(files, targets, strict=True):
        target.mkdir(parents=True, exist_ok=True)
        os.replace(path, target / file_name(writer))
        _fsync(target)
    shutil.rmtree(staged, ignore_errors=True)


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a rename is durable once its folder is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

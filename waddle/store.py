"""The DuckDB store: its schema, how to open it, and the read queries.

The DuckDB writer (``waddle.consumers.duckdb_writer``) is the only process that writes
the file; the CLI and the web app read it through the functions here, so a query is
written once. Every read query takes a DuckDB connection or cursor and only reads: in
the process that runs the writer, pass ``writer.cursor()`` (one per request or thread);
elsewhere use ``open_reader``.

Readers next to a running writer: DuckDB lets one process open a file for writing and
then no other process may open it, not even read-only. The writer therefore publishes
a snapshot of the ``runs`` table next to the database (``<stem>.runs.parquet``, replaced
atomically, at most a second behind); ``open_reader`` falls back to it when the file is
held, so ``waddle ls`` and ``waddle show`` work beside ``waddle serve`` or
``waddle-consume``. Metric queries need the database itself (``waddle export`` reads
the log instead, see ``waddle.commands``). The schema is documented in docs/schema.md.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from waddle.errors import StoreError, StoreLockedError, UsageError
from waddle.ids import check_id
from waddle.log.record import restore_non_finite

SCHEMA_VERSION = 1
DEFAULT_NAME = "waddle.duckdb"
_LOCK_RETRY_S = 5.0

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS _waddle;
CREATE TABLE IF NOT EXISTS _waddle.meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS _waddle.offsets (
    stream VARCHAR PRIMARY KEY, segment UBIGINT NOT NULL, position UBIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, project VARCHAR, name VARCHAR, status VARCHAR,
    started_at DOUBLE, finished_at DOUBLE, exit_code INTEGER,
    config JSON, summary JSON, context JSON, tags VARCHAR[], notes VARCHAR,
    group_name VARCHAR, job_type VARCHAR, last_step BIGINT, updated_at DOUBLE
);
CREATE TABLE IF NOT EXISTS streams (
    stream VARCHAR PRIMARY KEY, run_id VARCHAR, rank INTEGER, status VARCHAR,
    started_at DOUBLE, finished_at DOUBLE, exit_code INTEGER, dropped JSON,
    config JSON, summary JSON
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id VARCHAR, key VARCHAR, step BIGINT, ts DOUBLE, value DOUBLE
);
CREATE TABLE IF NOT EXISTS logged_values (
    run_id VARCHAR, key VARCHAR, step BIGINT, ts DOUBLE, value JSON
);
CREATE TABLE IF NOT EXISTS system (
    run_id VARCHAR, rank INTEGER, key VARCHAR, ts DOUBLE, value DOUBLE
);
CREATE TABLE IF NOT EXISTS console (
    run_id VARCHAR, rank INTEGER, seq BIGINT, ts DOUBLE, source VARCHAR, text VARCHAR
);
CREATE TABLE IF NOT EXISTS artifacts (
    run_id VARCHAR, rank INTEGER, ts DOUBLE, name VARCHAR, kind VARCHAR, path VARCHAR,
    size BIGINT, sha256 VARCHAR
);
"""

RUN_COLUMNS = (
    "run_id",
    "project",
    "name",
    "status",
    "started_at",
    "finished_at",
    "exit_code",
    "config",
    "summary",
    "context",
    "tags",
    "notes",
    "group_name",
    "job_type",
    "last_step",
    "updated_at",
)
JSON_COLUMNS = ("config", "summary", "context")


def default_path(root: Path | str) -> Path:
    """``<dir>/waddle.duckdb``."""
    return Path(root) / DEFAULT_NAME


def snapshot_path(db_path: Path | str) -> Path:
    """Where the writer of ``db_path`` publishes its runs snapshot."""
    path = Path(db_path)
    return path.with_name(f"{path.stem}.runs.parquet")


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store; for writing, create the schema and wait a little for a lock.

    A reader that just opened the file (``waddle ls``) briefly holds it; a writer that
    starts at that moment retries for a few seconds before giving up.
    """
    target = str(path)
    deadline = time.monotonic() + (0 if read_only else _LOCK_RETRY_S)
    while True:
        try:
            con = duckdb.connect(target, read_only=read_only)
            break
        except duckdb.Error as exc:
            if not _is_lock_conflict(exc):
                raise StoreError(f"cannot open the DuckDB store {target}: {exc}") from exc
            if time.monotonic() >= deadline:
                raise StoreLockedError(
                    f"the DuckDB store {target} is held by another process ({exc}). "
                    "DuckDB allows one writer per file: stop the other writer (waddle serve "
                    "or waddle-consume), or give this one another --duckdb path"
                ) from exc
            time.sleep(0.1)
    if not read_only:
        try:
            con.execute(SCHEMA)
            con.execute(
                "INSERT OR IGNORE INTO _waddle.meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )
        except duckdb.Error as exc:
            con.close()
            raise StoreError(f"cannot create the schema in {target}: {exc}") from exc
    return con


@dataclass
class Reader:
    """A read-only view of the store: the database, or the writer's runs snapshot."""

    con: duckdb.DuckDBPyConnection
    source: str
    path: Path

    @property
    def from_snapshot(self) -> bool:
        return self.source == "snapshot"

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_reader(db_path: Path | str) -> Reader:
    """Open the store for reading: the file itself, or the snapshot while a writer runs."""
    path = Path(db_path)
    if not path.exists():
        raise UsageError(
            f"no Waddle database at {path}; build it from the log with "
            f"`waddle-consume --dir {path.parent} --once`"
        )
    try:
        return Reader(connect(path, read_only=True), "database", path)
    except StoreLockedError:
        snapshot = snapshot_path(path)
        if not snapshot.exists():
            raise
    con = duckdb.connect()
    literal = str(snapshot).replace("'", "''")
    con.execute(f"CREATE VIEW runs AS SELECT * FROM read_parquet('{literal}')")
    return Reader(con, "snapshot", snapshot)


def publish_snapshot(con: duckdb.DuckDBPyConnection, db_path: Path | str) -> Path:
    """Write the runs table to the snapshot file, atomically (temporary file, rename)."""
    target = snapshot_path(db_path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    literal = str(temporary).replace("'", "''")
    con.execute(f"COPY (SELECT * FROM runs ORDER BY run_id) TO '{literal}' (FORMAT parquet)")
    os.replace(temporary, target)
    return target


def _row(columns: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    row = dict(zip(columns, values, strict=True))
    for name in JSON_COLUMNS:
        if name in row and isinstance(row[name], str):
            row[name] = orjson.loads(row[name])
    if isinstance(row.get("summary"), dict):
        restore_non_finite(row["summary"])
    return row


def list_runs(con: Any, project: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first: identity, status, times, duration and last step."""
    query = (
        "SELECT run_id, project, name, status, started_at, finished_at, exit_code, "
        "last_step, updated_at, "
        "coalesce(finished_at, updated_at) - started_at AS duration FROM runs"
    )
    params: list[Any] = []
    if project is not None:
        query += " WHERE project = ?"
        params.append(project)
    query += " ORDER BY started_at DESC NULLS LAST, run_id"
    cursor = con.execute(query, params)
    columns = [d[0] for d in cursor.description]
    return [_row(columns, values) for values in cursor.fetchall()]


def get_run(con: Any, run_id: str) -> dict[str, Any] | None:
    """One run with config, summary and context as Python values; None if unknown."""
    cursor = con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
    values = cursor.fetchone()
    return None if values is None else _row(RUN_COLUMNS, values)


def metric_keys(con: Any, run_id: str) -> list[str]:
    """The numeric metric keys a run logged, sorted."""
    rows = con.execute(
        "SELECT DISTINCT key FROM metrics WHERE run_id = ? ORDER BY key", [run_id]
    ).fetchall()
    return [key for (key,) in rows]


def metric_series(
    con: Any, run_id: str, key: str, max_points: int | None = None
) -> dict[str, list[Any]]:
    """One metric as columns ``step``, ``ts``, ``value``, ordered by step then time.

    With ``max_points``, a longer series is thinned to about that many points by keeping
    every n-th point and always the last one (NaN and infinities are kept as they are).
    """
    query = (
        "SELECT step, ts, value, row_number() OVER (ORDER BY step, ts) - 1 AS i, "
        "count(*) OVER () AS n FROM metrics WHERE run_id = ? AND key = ?"
    )
    params: list[Any] = [run_id, key]
    where = ""
    if max_points is not None:
        if max_points < 2:
            raise UsageError("max_points must be at least 2")
        where = " WHERE n <= ? OR i % ceil(n / ?)::BIGINT = 0 OR i = n - 1"
        params += [max_points, max_points - 1]
    rows = con.execute(
        f"SELECT step, ts, value FROM ({query}){where} ORDER BY i", params
    ).fetchall()
    return {
        "step": [r[0] for r in rows],
        "ts": [r[1] for r in rows],
        "value": [r[2] for r in rows],
    }


def export_metrics(con: Any, run_id: str, target: Path | str, fmt: str) -> int:
    """Write a run's metrics (key, step, ts, value) to ``target`` as csv or parquet.

    Returns the number of rows written.
    """
    if fmt not in ("csv", "parquet"):
        raise UsageError(f"format must be csv or parquet, got {fmt!r}")
    check_id(run_id, "run id")
    literal = str(target).replace("'", "''")
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
    con.execute(
        f"COPY (SELECT key, step, ts, value FROM metrics WHERE run_id = '{run_id}' "
        f"ORDER BY key, step, ts) TO '{literal}' ({options})"
    )
    (count,) = con.execute("SELECT count(*) FROM metrics WHERE run_id = ?", [run_id]).fetchone()
    return count

"""The DuckDB store: its schema and how to open it (the read queries: ``waddle.store.queries``).

The DuckDB writer (``waddle.consumers.duckdb.writer``) is the only process that writes
the file; the CLI and the web app read it through ``waddle.store.queries``, so a query is
written once. In the process that runs the writer, read through ``writer.cursor()``
(one per request or thread); elsewhere use ``open_reader``.

Readers next to a running writer: DuckDB lets one process open a file for writing and
then no other process may open it, not even read-only. The writer therefore publishes
a snapshot of the ``runs`` table next to the database (``<stem>.runs.parquet``, replaced
atomically, at most a second behind); ``open_reader`` falls back to it when the file is
held, so ``waddle ls`` and ``waddle show`` work beside ``waddle serve`` or
``waddle-consume``. Metric queries need the database itself (``waddle export`` reads
the log instead, see ``waddle.cli.commands``). The schema is documented in docs/schema.md.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from waddle import paths
from waddle.errors import StoreError, StoreLockedError, UsageError

SCHEMA_VERSION = 4
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
    started_at DOUBLE, finished_at DOUBLE, exit_code BIGINT,
    config JSON, summary JSON, context JSON, tags VARCHAR[], notes VARCHAR,
    group_name VARCHAR, job_type VARCHAR, last_step BIGINT, updated_at DOUBLE,
    metric_defs JSON
);
CREATE TABLE IF NOT EXISTS streams (
    stream VARCHAR PRIMARY KEY, run_id VARCHAR, rank INTEGER, status VARCHAR,
    started_at DOUBLE, finished_at DOUBLE, exit_code BIGINT, dropped JSON,
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
CREATE TABLE IF NOT EXISTS media (
    run_id VARCHAR, rank INTEGER, key VARCHAR, step BIGINT, idx INTEGER, kind VARCHAR,
    sha256 VARCHAR, size BIGINT, format VARCHAR, width BIGINT, height BIGINT,
    caption VARCHAR, meta JSON, ts DOUBLE
);
CREATE TABLE IF NOT EXISTS histograms (
    run_id VARCHAR, rank INTEGER, key VARCHAR, step BIGINT, bins DOUBLE[], counts BIGINT[],
    ts DOUBLE
);
CREATE TABLE IF NOT EXISTS artifact_versions (
    name VARCHAR, type VARCHAR, version BIGINT, digest VARCHAR, manifest VARCHAR,
    size BIGINT, files BIGINT, aliases VARCHAR[], metadata JSON, run_id VARCHAR, ts DOUBLE
);
CREATE TABLE IF NOT EXISTS artifact_uses (
    name VARCHAR, version BIGINT, digest VARCHAR, alias VARCHAR, run_id VARCHAR, ts DOUBLE
);
CREATE TABLE IF NOT EXISTS quarantine (
    stream VARCHAR, seq BIGINT, reason VARCHAR, event VARCHAR, quarantined_at DOUBLE
);
"""
# What a store of an older schema version needs to reach this one.
MIGRATIONS = {
    1: (
        "ALTER TABLE runs ALTER exit_code TYPE BIGINT",
        "ALTER TABLE streams ALTER exit_code TYPE BIGINT",
    ),
    2: ("ALTER TABLE runs ADD COLUMN IF NOT EXISTS metric_defs JSON",),
    # Version 4 only added tables (media, histograms, artifact_versions, artifact_uses),
    # which SCHEMA creates on every open.
    3: (),
}

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
    "metric_defs",
)
JSON_COLUMNS = ("config", "summary", "context", "metric_defs")


# The default places, from the one module that names every path.
default_path = paths.duckdb_path
snapshot_path = paths.snapshot_path


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
            _create(con)
        except duckdb.Error as exc:
            con.close()
            raise StoreError(f"cannot create the schema in {target}: {exc}") from exc
    return con


def _create(con: duckdb.DuckDBPyConnection) -> None:
    """The schema, its version and any migration, all or nothing in one transaction.

    One transaction also means one sync of DuckDB's log instead of one per table, which
    made creating a store a noticeable part of a short ``waddle-consume --once``.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(SCHEMA)
        con.execute(
            "INSERT OR IGNORE INTO _waddle.meta VALUES ('schema_version', ?)",
            [str(SCHEMA_VERSION)],
        )
        _migrate(con)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a store of an older schema version up to this one (inside ``_create``)."""
    ((version,),) = con.execute(
        "SELECT value FROM _waddle.meta WHERE key = 'schema_version'"
    ).fetchall()
    for step in range(int(version), SCHEMA_VERSION):
        for statement in MIGRATIONS[step]:
            con.execute(statement)
    if int(version) < SCHEMA_VERSION:
        con.execute(
            "UPDATE _waddle.meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
        )


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

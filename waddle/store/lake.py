"""The Parquet lake: its layout, and views that read it beside a DuckDB store.

Layout (docs/lake.md)::

    <lake>/<table>/project=<P>/run_id=<R>/part-<writer>.parquet

one file per (table, run, writer): the lake consumer (``waddle.consumers.lake``) writes a
finished run's rows of each table once, and replaces them when the run finishes again.
Partition values are in the path only (hive layout, as Spark and Trino expect); the
files hold the other columns. The project is percent-encoded (DuckDB and Spark decode
it), the run id is a checked id (``waddle.ids``), so no value can name a path outside
the lake. A run is in the lake once its ``runs`` file is: that file is put in place
after every other table's.

``LakeViews`` lets the existing read queries (``waddle.store.queries``) run unchanged
over the union of a store and a lake: each cursor it hands out resolves ``runs``,
``metrics``, ... to views that add the lake's rows of runs the store does not hold
(a run in both: the store's rows win, they are the live ones).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import duckdb

from waddle.ids import check_id

# The store's tables that have a run_id column; ``runs`` last, so a run shows up only
# once everything else of it is in place.
STORE_TABLES = (
    "streams",
    "metrics",
    "logged_values",
    "system",
    "console",
    "artifacts",
    "media",
    "histograms",
    "artifact_versions",
    "artifact_uses",
    "runs",
)
# Long-form views of the runs' JSON columns, for engines that query keys as rows.
DERIVED_TABLES = ("config", "summary")
TABLES = (*DERIVED_TABLES, *STORE_TABLES)
PARTITION_COLUMNS = ("project", "run_id")
# Spark's and Hive's name for a null partition value.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
VIEWS_CATALOG = "waddle_lake"


def partition_value(value: str | None) -> str:
    """A partition value as a path component: percent-encoded, never a separator."""
    return NULL_PARTITION if value is None else quote(value, safe="")


def partition_dir(lake: Path, table: str, project: str | None, run_id: str) -> Path:
    """The folder of one run's files of ``table``; refuses an invalid run id."""
    check_id(run_id, "run id")
    return lake / table / f"project={partition_value(project)}" / f"run_id={run_id}"


def literal(value: str | Path) -> str:
    """``value`` as a SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def scan(lake: Path, table: str) -> str:
    """The table function reading every file of ``table`` in the lake."""
    pattern = literal(lake.absolute() / table / "*" / "*" / "*.parquet")
    return (
        f"read_parquet({pattern}, hive_partitioning = true, union_by_name = true, "
        "hive_types = {'project': VARCHAR, 'run_id': VARCHAR})"
    )


def has_files(lake: Path, table: str) -> bool:
    """Whether ``table`` has at least one file in the lake (DuckDB refuses an empty glob)."""
    return next((lake / table).glob("*/*/*.parquet"), None) is not None


def lake_select(lake: Path, table: str, columns: list[str]) -> str:
    """The lake's rows of ``table`` with exactly ``columns``, in that order.

    ``runs`` keeps one row per run: several writers (ingesters) may each hold a part.
    """
    names = ", ".join(
        f"CASE WHEN project = '{NULL_PARTITION}' THEN NULL ELSE project END AS project"
        if column == "project"
        else f'"{column}"'
        for column in columns
    )
    select = f"SELECT {names} FROM {scan(lake, table)}"
    if table == "runs":
        select += (
            " QUALIFY row_number() OVER (PARTITION BY run_id "
            "ORDER BY finished_at DESC NULLS LAST, updated_at DESC NULLS LAST) = 1"
        )
    return select


class LakeViews:
    """Cursors over a store plus a lake, for a process that reads the store's database.

    The views live in an in-memory catalog attached to the store's DuckDB instance;
    each cursor gets a search path that puts them before the store's tables, so tables
    the lake does not hold (quarantine, the writer's own) are the store's. A table
    whose lake folder has no file yet is the store's alone until one appears (checked
    at each cursor until then, which costs a directory listing of an empty folder).
    """

    def __init__(self, lake: Path | str) -> None:
        self.lake = Path(lake).absolute()
        self._waiting: set[str] | None = None
        self._database = ""
        self._lock = threading.Lock()

    def wrap(
        self, cursor: Callable[[], duckdb.DuckDBPyConnection]
    ) -> Callable[[], duckdb.DuckDBPyConnection]:
        """``cursor`` made to read through the views."""

        def lake_cursor() -> duckdb.DuckDBPyConnection:
            return self.prepare(cursor())

        return lake_cursor

    def prepare(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """Point ``con`` (a cursor on the store) at the views, creating what is due."""
        if self._waiting is None or self._waiting:
            with self._lock:
                self._build(con)
        path = f"{VIEWS_CATALOG}.main,{self._store}".replace("'", "''")
        con.execute(f"SET search_path = '{path}'")
        return con

    @property
    def _store(self) -> str:
        """The store's main schema, quoted (its catalog is named after the file)."""
        return '"' + self._database.replace('"', '""') + '".main'

    def _build(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._waiting is None:
            ((self._database,),) = con.execute("SELECT current_database()").fetchall()
            con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {VIEWS_CATALOG}")
            self._waiting = set(STORE_TABLES)
            for table in STORE_TABLES:
                self._view(con, table, with_lake=False)
        for table in sorted(self._waiting):
            if has_files(self.lake, table):
                self._view(con, table, with_lake=True)
                self._waiting.discard(table)

    def _view(self, con: duckdb.DuckDBPyConnection, table: str, *, with_lake: bool) -> None:
        store = self._store
        columns = [
            name
            for (name,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = ? "
                "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                [self._database, table],
            ).fetchall()
        ]
        names = ", ".join(f'"{column}"' for column in columns)
        body = f"SELECT {names} FROM {store}.{table}"
        if with_lake:
            body += (
                f" UNION ALL SELECT * FROM ({lake_select(self.lake, table, columns)}) "
                f"WHERE run_id NOT IN (SELECT run_id FROM {store}.runs)"
            )
        con.execute(f"CREATE OR REPLACE VIEW {VIEWS_CATALOG}.main.{table} AS {body}")

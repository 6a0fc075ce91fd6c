"""The DuckDB writer's pending rows, and the statements that write them.

Rows wait here, column by column, until they are shipped to the database thread. There
each table's batch is inserted with one statement over registered numpy columns (DuckDB
scans them natively; there is no row-by-row path), and the run, stream and offset rows
of a commit are replaced with one statement per table: a statement costs about a
millisecond whatever its size, so their number is what is kept small.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import duckdb
import numpy as np

from waddle.consumers import quarantine
from waddle.consumers.duckdb import fold, media
from waddle.consumers.duckdb.columns import Codes, LongColumns, RowColumns, to_json
from waddle.store import schema as store

CONSOLE = ("run_id", "rank", "seq", "ts", "source", "text")
ARTIFACTS = ("run_id", "rank", "ts", "name", "kind", "path", "size", "sha256")
VALUES = ("run_id", "key", "step", "ts", "value")
# Run ids and keys arrive as codes, indexes into the list of names given as $names.
RUN, KEY = "$names[b.run + 1]", "$names[b.key + 1]"
VALUE = "CASE WHEN b.nan THEN 'NaN'::DOUBLE ELSE b.value END"
# The runs columns of ``upsert``, tags back from JSON text to a list.
RUNS_SELECT = ", ".join(
    f"from_json(c{index}, '[\"VARCHAR\"]')" if column == "tags" else f"c{index}"
    for index, column in enumerate(store.RUN_COLUMNS)
)


class PendingRows:
    """Rows handled since they were last shipped to the database thread."""

    def __init__(self, names: Codes) -> None:
        self.names = names
        self.metrics = LongColumns(names)
        self.system = LongColumns(names)
        self.values = RowColumns(VALUES)
        self.console = RowColumns(CONSOLE)
        self.artifacts = RowColumns(ARTIFACTS)
        self.quarantine = RowColumns(quarantine.COLUMNS)
        self.media = RowColumns(media.MEDIA)
        self.histograms = RowColumns(media.HISTOGRAMS)
        self.artifact_versions = RowColumns(media.ARTIFACT_VERSIONS)
        self.artifact_uses = RowColumns(media.ARTIFACT_USES)

    def _small(self) -> tuple[tuple[str, RowColumns, str], ...]:
        """``(table, rows, select)`` of the tables gathered row by row."""
        return (
            ("logged_values", self.values, "SELECT * FROM batch"),
            ("console", self.console, "SELECT * FROM batch"),
            ("artifacts", self.artifacts, "SELECT * FROM batch"),
            ("quarantine", self.quarantine, "SELECT * FROM batch"),
            ("media", self.media, media.MEDIA_SELECT),
            ("histograms", self.histograms, media.HISTOGRAMS_SELECT),
            ("artifact_versions", self.artifact_versions, media.ARTIFACT_VERSIONS_SELECT),
            ("artifact_uses", self.artifact_uses, media.ARTIFACT_USES_SELECT),
        )

    def count(self) -> int:
        small = sum(len(rows.rows) for _, rows, _ in self._small())
        return self.metrics.rows + self.system.rows + small

    def inserts(self) -> list[tuple[str, dict[str, Any], str]]:
        """``(table, columns, select)`` for each table with rows; ``select`` reads ``batch``."""
        found = []
        for table, long, order in (
            ("metrics", self.metrics, f"{RUN}, {KEY}, b.axis, b.ts, {VALUE}"),
            ("system", self.system, f"{RUN}, b.axis, {KEY}, b.ts, {VALUE}"),
        ):
            if long.rows:
                columns: dict[str, Any] = long.arrays()
                columns["names"] = list(self.names.codes)
                found.append((table, columns, f"SELECT {order} FROM batch AS b"))
        for table, rows, select in self._small():
            if rows.rows:
                found.append((table, rows.arrays(), select))
        return found


def insert(
    con: duckdb.DuckDBPyConnection, *, table: str, arrays: dict[str, Any], select: str
) -> None:
    """Insert column arrays through a relation registered as ``batch``.

    ``arrays`` holds the batch's columns and, under ``names``, the names that coded
    columns index (``$names`` in ``select``). Two calls into DuckDB, no more: while the
    parsing thread holds the GIL, each call waits for it, up to the 5 ms switch interval
    per hand-off, so a view is replaced by the next ``register`` rather than unregistered.
    """
    names = arrays.pop("names", None)
    con.register("batch", arrays)
    con.execute(f"INSERT INTO {table} {select}", {"names": names} if names is not None else None)


def upsert(
    con: duckdb.DuckDBPyConnection, table: str, rows: list[list[Any]], select: str = "*"
) -> None:
    """Insert or replace rows by primary key, all in one statement over registered columns
    ``c0``, ``c1``… that ``select`` reads.

    Not a ``VALUES`` list of parameters: DuckDB binds each parameter on its own, and a
    commit that touched 3,000 runs (a central host's live runs) spent 1.7 s of CPU
    there, against about 70 ms for the same rows registered as object columns. DuckDB
    infers an object column's type from its values, which is safe for scalars but not
    for lists (a first ``[]`` makes a list of nulls), so lists travel as JSON text.
    """
    if rows:
        con.register("upserted", object_columns(rows))
        con.execute(f"INSERT OR REPLACE INTO {table} SELECT {select} FROM upserted")


def object_columns(rows: list[list[Any]]) -> dict[str, np.ndarray]:
    """``rows`` as object columns ``c0``, ``c1``… for ``register``."""
    count = len(rows)
    return {
        f"c{index}": np.fromiter(values, dtype=object, count=count)
        for index, values in enumerate(zip(*rows, strict=True))
    }


def upsert_all(
    con: duckdb.DuckDBPyConnection,
    runs: list[list[Any]],
    streams: list[list[Any]],
    offsets: list[list[Any]],
    steps: list[list[Any]] | None = None,
) -> None:
    """The rows a commit replaces besides the inserts: runs, streams, offsets; and the
    runs of which only ``last_step`` and ``updated_at`` moved (``steps``: run id, step,
    time), updated in place: a sixth of the cost of replacing their rows."""
    upsert(con, "runs", runs, RUNS_SELECT)
    if steps:
        con.register("stepped", object_columns(steps))
        con.execute(
            "UPDATE runs SET last_step = s.c1, updated_at = s.c2 FROM stepped AS s "
            "WHERE runs.run_id = s.c0"
        )
    upsert(con, "streams", streams)
    upsert(con, "_waddle.offsets", offsets)


def run_values(run: fold.RunRow) -> list[Any]:
    """A ``runs`` row in column order, dicts and tags as JSON text (``RUNS_SELECT``); the
    text is kept on the run until ``fold.apply`` changes it."""
    values = list(_RUN_FIELDS(run))
    if run.json is None:
        run.json = [to_json(values[index]) for index in _RUN_JSON]
    for index, text in zip(_RUN_JSON, run.json, strict=True):
        values[index] = text
    return values


_RUN_FIELDS = attrgetter(*store.RUN_COLUMNS)
_RUN_JSON = [
    index
    for index, column in enumerate(store.RUN_COLUMNS)
    if column in store.JSON_COLUMNS or column == "tags"
]


def stream_values(row: fold.StreamRow) -> list[Any]:
    """A ``streams`` row in column order, dicts as JSON text; kept on the row until
    ``fold.apply`` changes it."""
    if row.values is None:
        row.values = _stream_values(row)
    return row.values


def _stream_values(row: fold.StreamRow) -> list[Any]:
    return [
        row.stream,
        row.run_id,
        row.rank,
        row.status,
        row.started_at,
        row.finished_at,
        row.exit_code,
        to_json(row.dropped),
        to_json(row.config),
        to_json(row.summary),
    ]

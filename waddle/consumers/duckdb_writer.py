"""The DuckDB writer: events into the tables of ``<dir>/waddle.duckdb`` (docs/schema.md).

Delivery: exactly-once. The rows of everything handled since the last commit and the
offsets they came from are written in one DuckDB transaction, and on start the writer
resumes from the offsets in the database (never from the published state file), so a
SIGKILL at any moment followed by a restart yields the same tables as a run that was
never interrupted. Rows of one stream land in seq order; nothing is ordered across
streams. The writer is the only process writing the file (DuckDB allows one).

Reading while it runs: in the same process, ``cursor()`` gives a new cursor on the
writer's database (one per thread or request; reads see committed data only). Other
processes read the runs snapshot it publishes (see ``waddle.store``). The writer sets
DuckDB's ``threads`` to one less than the CPUs, for every cursor of its database.

Throughput: parsing happens in the caller's thread, inserts in a database thread
(``db_worker``), so DuckDB writes one batch while the next is parsed. Backpressure: at
most two inserts wait for the database thread; ``handle`` blocks beyond that.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import orjson

from waddle import queries, store
from waddle.consumers import runs as fold
from waddle.consumers.base import Consumer, Offsets
from waddle.consumers.columns import INT64_MAX, Codes
from waddle.consumers.db_worker import DatabaseWorker
from waddle.consumers.inserts import PendingRows, insert, run_values, stream_values, upsert_all
from waddle.consumers.snapshots import Snapshots
from waddle.consumers.state import destination_name
from waddle.errors import StoreError, UsageError
from waddle.eventlog.reader import Batch, Offset
from waddle.eventlog.record import restore_non_finite
from waddle.ids import run_id_of_stream

logger = logging.getLogger("waddle.consumers")
_STEP = itemgetter("step")

SNAPSHOT_INTERVAL_S = 1.0
# Rows gathered before they go to the database thread: DuckDB writes a large insert
# straight into row groups, while many small ones cost about twice as much.
SHIP_ROWS = 1 << 18
_CACHED_RUNS = 1024
_CACHED_NAMES = 1 << 16


class DuckDBWriter(Consumer):
    """The durable consumer that keeps the store's tables.

    ``durable=False`` makes a scratch writer (e.g. into a temporary file) that neither
    registers nor holds retention; its database still keeps its own offsets.
    """

    durable = True

    def __init__(
        self,
        root: Path | str,
        path: Path | str | None = None,
        *,
        name: str | None = None,
        durable: bool = True,
        snapshot_interval: float = SNAPSHOT_INTERVAL_S,
    ) -> None:
        self.root = Path(root)
        self.durable = durable
        self.path = Path(path) if path is not None else store.default_path(self.root)
        self.name = name or destination_name("duckdb", self.path, store.default_path(self.root))
        self.snapshot_interval = snapshot_interval
        self._con: duckdb.DuckDBPyConnection | None = None
        self._worker: DatabaseWorker | None = None
        self._snapshots: Snapshots | None = None
        self._committed: Offsets = {}
        self._streams: dict[str, fold.StreamRow] = {}
        self._runs: dict[str, fold.RunRow] = {}
        self._names = Codes()
        self._rows = PendingRows(self._names)
        self._touched_runs: set[str] = set()
        self._touched_streams: set[str] = set()

    @property
    def in_memory(self) -> bool:
        return str(self.path) == ":memory:"

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Open (creating the schema); resume from the offsets stored in the database."""
        if self._con is not None:
            raise UsageError(f"the DuckDB writer for {self.path} is already started")
        if not self.in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = con = store.connect(self.path)
        self._load()
        # One core stays free for parsing, the writer's critical path: DuckDB threads on
        # every core would preempt it (on 2 cores this is faster by about a quarter).
        con.execute(f"SET threads = {max(1, (os.cpu_count() or 2) - 1)}")
        self._worker = DatabaseWorker(con.cursor(), name=self.name)
        if not self.in_memory and self.snapshot_interval > 0:
            self._snapshots = Snapshots(con.cursor(), self.path, self.snapshot_interval)
        return super().start(self._committed)

    def _load(self) -> None:
        """Offsets and stream rows as committed; nothing pending."""
        assert self._con is not None
        rows = self._con.execute("SELECT stream, segment, position, seq FROM _waddle.offsets")
        self._committed = {s: Offset(g, p, q) for s, g, p, q in rows.fetchall()}
        self._streams = {
            row[0]: fold.StreamRow(
                *row[:7], *(restore_non_finite(orjson.loads(cell or "{}")) for cell in row[7:])
            )
            for row in self._con.execute("SELECT * FROM streams").fetchall()
        }
        self._reset()
        self.taken.clear()
        self.taken.update(self._committed)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the writer's database, for reads from another thread."""
        if self._con is None:
            raise UsageError("the DuckDB writer is not started; start it before reading")
        return self._con.cursor()

    def handle(self, batches: list[Batch]) -> None:
        """Fold the batches into rows and hand them to the database thread."""
        for batch in batches:
            events = self.fresh(batch)
            if events:
                self._fold(batch.stream, events)
            if self.taken.get(batch.stream) != self._committed.get(batch.stream):
                self._touched_streams.add(batch.stream)
        if self._rows.count() >= SHIP_ROWS:
            self._ship()

    def _fold(self, stream: str, events: list[dict[str, Any]]) -> None:
        metrics: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        rows = self._rows
        for event in events:
            kind = event["type"]
            if kind == "metrics":
                metrics.append(event)
            elif kind == "system":
                system.append(event)
            else:
                row = self._stream_row(stream, event)
                run = self._run_row(row.run_id)
                fold.apply(run, row, event)
                if kind == "console":
                    rows.console.append(
                        (run.run_id, row.rank, event["seq"], event["ts"], *_console(event))
                    )
                elif kind == "artifact":
                    rows.artifacts.append((run.run_id, row.rank, event["ts"], *_artifact(event)))
                self._touched_runs.add(run.run_id)
        if metrics or system:
            row = self._stream_row(stream, (metrics or system)[0])
            run = self._run_row(row.run_id)
            self._touched_runs.add(run.run_id)
            top = max(map(_STEP, metrics)) if metrics else 0
            if top > INT64_MAX:
                metrics = _within_bigint(stream, metrics)
                top = max(map(_STEP, metrics)) if metrics else 0
            if metrics:
                rows.metrics.add(run.run_id, metrics, "step", rows.values.rows)
                fold.seen(run, metrics[-1]["ts"], top)
            if system:
                rows.system.add(run.run_id, system, row.rank)
                fold.seen(run, system[-1]["ts"])

    def _stream_row(self, stream: str, event: dict[str, Any]) -> fold.StreamRow:
        row = self._streams.get(stream)
        if row is None:
            if event["type"] == "run":
                row = fold.StreamRow(stream, event["run_id"], _rank(event))
            else:
                logger.warning(
                    "waddle: stream %r has no run event before seq %d; its run id is taken "
                    "from the stream name",
                    stream,
                    event["seq"],
                )
                run_id = run_id_of_stream(stream)
                rank = stream[len(run_id) + 1 :]
                row = fold.StreamRow(stream, run_id, int(rank) if rank else 0)
            self._streams[stream] = row
        return row

    def _run_row(self, run_id: str) -> fold.RunRow:
        run = self._runs.get(run_id)
        if run is None:
            run = fold.RunRow(run_id)
            with self.cursor() as cursor:
                found = queries.get_run(cursor, run_id)
                if found is not None:
                    for key, value in found.items():
                        setattr(run, key, value)
                    run.config, run.summary = run.config or {}, run.summary or {}
                    run.context, run.tags = run.context or {}, list(run.tags or [])
                    (run.lead_rank,) = cursor.execute(
                        "SELECT min(rank) FROM streams WHERE run_id = ?", [run_id]
                    ).fetchone()
            self._runs[run_id] = run
        return run

    def _ship(self) -> None:
        """Hand the rows gathered so far to the database thread (it inserts them now)."""
        assert self._worker is not None
        for table, arrays, select in self._rows.inserts():
            try:
                operation = functools.partial(insert, table=table, arrays=arrays, select=select)
                self._worker.submit(operation)
            except duckdb.Error as exc:
                raise StoreError(f"could not write to {self.path}: {exc}") from exc
        self._rows = PendingRows(self._names)

    def commit(self) -> Offsets:
        """Commit the rows, the run and stream rows and the offsets in one transaction."""
        if not self._touched_streams and not self._touched_runs:
            return dict(self._committed)
        assert self._worker is not None
        self._ship()
        last = functools.partial(upsert_all, **self._upserts())
        try:
            self._worker.commit(last)
        except BaseException as exc:
            self._worker.rollback()
            self._forget()
            if isinstance(exc, duckdb.Error):
                raise StoreError(f"could not write to {self.path}: {exc}") from exc
            raise
        self._committed = dict(self.taken)
        if self._touched_runs and self._snapshots is not None:
            self._snapshots.due()
        self._touched_runs, self._touched_streams = set(), set()
        if len(self._runs) > _CACHED_RUNS:
            self._runs = {}
        if len(self._names.codes) > _CACHED_NAMES:
            self._names = Codes()
            self._rows = PendingRows(self._names)
        return dict(self._committed)

    def _upserts(self) -> dict[str, list[list[Any]]]:
        """The rows of runs, streams and offsets this commit replaces."""
        streams = sorted(self._touched_streams)
        return {
            "runs": [run_values(self._runs[run_id]) for run_id in sorted(self._touched_runs)],
            "streams": [stream_values(self._streams[s]) for s in streams if s in self._streams],
            "offsets": [
                [s, self.taken[s].segment, self.taken[s].position, self.taken[s].seq]
                for s in streams
            ],
        }

    def _reset(self) -> None:
        self._names = Codes()
        self._rows = PendingRows(self._names)
        self._runs = {}
        self._touched_runs, self._touched_streams = set(), set()

    def _forget(self) -> None:
        """After a failed commit: back to what the database holds."""
        with contextlib.suppress(duckdb.Error):
            self._load()

    def close(self) -> None:
        """Roll back what was not committed, publish a last snapshot, close the database."""
        self._reset()
        if self._worker is not None:
            self._worker.close()
            self._worker.con.close()
            self._worker = None
        if self._snapshots is not None:
            self._snapshots.close()
            self._snapshots = None
        if self._con is not None:
            self._con.close()
            self._con = None


def _console(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["stream"], event["text"]


def _artifact(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(event[name] for name in ("name", "kind", "path", "size", "sha256"))


def _rank(event: dict[str, Any]) -> int:
    rank = event.get("rank")
    return rank if type(rank) is int and rank >= 0 else 0


def _within_bigint(stream: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave out (and report) metrics events whose step does not fit a BIGINT."""
    kept = [event for event in events if event["step"] <= INT64_MAX]
    logger.warning(
        "waddle: stream %r: %d metrics events with a step above 2**63-1 left out",
        stream,
        len(events) - len(kept),
    )
    return kept

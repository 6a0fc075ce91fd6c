"""The DuckDB writer: events into the tables of ``<dir>/waddle.duckdb`` (docs/schema.md).

Delivery: exactly-once. The rows of everything handled since the last commit and the
offsets they came from are written in one DuckDB transaction, and on start the writer
resumes from the offsets in the database (never from the published state file), so a
SIGKILL at any moment followed by a restart yields the same tables as a run that was
never interrupted. Rows of one stream land in seq order; nothing is ordered across
streams. The writer is the only process writing the file (DuckDB allows one).

Reading while it runs: in the same process, ``cursor()`` gives a new cursor on the
writer's database (one per thread or request; reads see committed data only). Other
processes read the runs snapshot it publishes (see ``waddle.store.schema``). The writer sets
DuckDB's ``threads`` to one less than the CPUs, for every cursor of its database.

Throughput: parsing happens in the caller's thread, inserts in a database thread
(``db_worker``), so DuckDB writes one batch while the next is parsed. Backpressure: at
most two inserts wait for the database thread; ``handle`` blocks beyond that.

Events it cannot store are quarantined, never fatal (``waddle.consumers.quarantine``):
a line the reader skipped as bad becomes a row of the ``quarantine`` table, and when
folding an event fails or DuckDB refuses a value of a batch (a number out of a column's
range, say), everything since the last commit is rolled back and redone from the log,
batch by batch; a batch that still fails is narrowed down by trial inserts, rolled back
each time, to the events that cannot be stored. Those go to the ``quarantine`` table,
with the offsets, in the same transaction as the rest; each is logged when it happens.
A failure that no event explains (a full disk, a dropped table) still raises
``StoreError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import duckdb
import orjson

from waddle.consumers import quarantine
from waddle.consumers.base import Consumer, Offsets
from waddle.consumers.duckdb import fold, media
from waddle.consumers.duckdb.columns import Codes
from waddle.consumers.duckdb.inserts import (
    PendingRows,
    insert,
    run_values,
    stream_values,
    upsert_all,
)
from waddle.consumers.duckdb.snapshots import Snapshots
from waddle.consumers.duckdb.worker import DatabaseWorker
from waddle.consumers.registry import destination_name
from waddle.errors import StoreError, UsageError
from waddle.event_types import Event
from waddle.eventlog import collector
from waddle.eventlog.reader import Batch, Corruption, LogReader, Offset
from waddle.eventlog.record import restore_non_finite
from waddle.ids import run_id_of_stream
from waddle.store import queries
from waddle.store import schema as store

logger = logging.getLogger("waddle.consumers")
_TYPE = itemgetter("type")
_METRICS_ONLY = {"metrics"}

SNAPSHOT_INTERVAL_S = 1.0
# Rows gathered before they go to the database thread: DuckDB writes a large insert
# straight into row groups, while many small ones cost about twice as much.
SHIP_ROWS = 1 << 18
_CACHED_RUNS = 1024
_LIVE_S = 60.0  # a run used this recently stays cached past _CACHED_RUNS
# Batches are redone from the log in pieces of this size when a batch could not be
# stored: small enough that narrowing one down by trial inserts is quick.
RECOVERY_BATCH_BYTES = 64 * 1024
# What folding an event that breaks the writer's assumptions raises, and what DuckDB
# raises for a value it cannot store: both mean "this event", so both are narrowed down
# and quarantined. Anything else (a full disk, a dropped table) is the store's failure.
UNFOLDABLE = (ArithmeticError, LookupError, TypeError, ValueError, RecursionError)
REFUSED = (duckdb.DataError, duckdb.IntegrityError, duckdb.InvalidInputException)


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
        self._rows = PendingRows(Codes())
        self._touched_runs: set[str] = set()
        # Every cached run's id: when it was loaded or a commit last held it, oldest first.
        self._used_at: OrderedDict[str, float] = OrderedDict()
        self._touched_streams: set[str] = set()
        self._stored_streams: set[str] = set()  # rows committed as they are (``_stored``)
        self._stored_runs: set[str] = set()  # likewise (``_run_stored``)
        self._set_aside: list[quarantine.Quarantined] = []
        self.quarantined = 0
        self._recovering = False
        self._unnamed: set[str] = set()
        self._pause: contextlib.ExitStack | None = None

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
        self.quarantined = queries.quarantined(con)
        if self.durable and (
            self.quarantined or quarantine.count_path(self.root, self.name).exists()
        ):
            quarantine.publish_count(self.root, self.name, self.quarantined)
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
        """Fold the batches into rows and hand them to the database thread.

        A batch that cannot be folded, or an insert that DuckDB refused, sends what was
        handled since the last commit through ``_recover`` (see the module's docstring).

        From here to the next commit the cyclic collector is paused: the reader pauses it
        only while it parses a chunk, so without this each chunk's events, alive until
        they are folded, were scanned by the young collection that followed the parse.
        """
        if self._pause is None:
            self._pause = contextlib.ExitStack()
            self._pause.enter_context(collector.paused())
        self._load_runs([self._run_of(batch) for batch in batches if batch.events])
        for batch in batches:
            before = self.taken.get(batch.stream, Offset())
            events = _open(self.fresh(batch))
            try:
                self._take(batch.stream, events, quarantine.new_corruption(batch, before))
            except UNFOLDABLE as exc:
                self._abandon(exc)
        if self._rows.count() >= SHIP_ROWS:
            try:
                self._ship()
            except REFUSED as exc:
                self._abandon(exc)

    def _take(self, stream: str, events: list[dict[str, Any]], corrupt: list[Corruption]) -> None:
        """Fold ``events`` of ``stream`` and quarantine the bad lines the reader skipped."""
        if events:
            self._fold(stream, events)
        for item in corrupt:
            self._aside(quarantine.bad_line(item, self.root))
        if self.taken.get(stream) != self._committed.get(stream):
            self._touched_streams.add(stream)

    def _aside(self, record: quarantine.Quarantined) -> None:
        self._set_aside.append(record)
        self._rows.quarantine.append(record.row())

    def _fold(self, stream: str, events: list[dict[str, Any]]) -> None:
        metrics: list[dict[str, Any]] = []
        system: list[dict[str, Any]] = []
        rows = self._rows
        if set(map(_TYPE, events)) == _METRICS_ONLY:  # the bulk of a log: one C-level pass
            metrics, events = events, []
        for event in events:
            kind = event["type"]
            if kind == "metrics":
                metrics.append(event)
            elif kind == "system":
                system.append(event)
            elif kind == "skipped":  # a seq the relay's log lost: kept visible, not folded
                self._aside(
                    quarantine.set_aside(stream, event, f"skipped by the relay: {event['reason']}")
                )
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
                elif kind == "artifact_version":
                    rows.artifact_versions.append(media.artifact_version_row(run.run_id, event))
                elif kind == "artifact_use":
                    rows.artifact_uses.append(media.artifact_use_row(run.run_id, event))
                self._touched_runs.add(run.run_id)
        if metrics or system:
            row = self._stream_row(stream, (metrics or system)[0])
            run = self._run_row(row.run_id)
            self._touched_runs.add(run.run_id)
            if metrics:
                typed: list[tuple[Any, ...]] = []
                top = rows.metrics.add(run.run_id, metrics, "step", rows.values.rows, typed)
                for key, step, ts, value in typed:
                    found, histograms = media.media_rows(run.run_id, row.rank, key, step, ts, value)
                    rows.media.rows.extend(found)
                    rows.histograms.rows.extend(histograms)
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
                if stream not in self._unnamed:  # once: a recovery folds a batch again
                    self._unnamed.add(stream)
                    logger.warning(
                        "waddle: stream %r has no run event before seq %d; its run id is "
                        "taken from the stream name",
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
            self._load_runs([run_id])
            run = self._runs[run_id]
        return run

    def _run_of(self, batch: Batch) -> str:
        """The run id that ``batch``'s stream belongs to (as ``_stream_row`` finds it)."""
        row = self._streams.get(batch.stream)
        if row is not None:
            return row.run_id
        first = batch.events[0]
        run_id = first.get("run_id") if first.get("type") == "run" else None
        return run_id if type(run_id) is str else run_id_of_stream(batch.stream)

    def _load_runs(self, run_ids: list[str]) -> None:
        """Cache the rows of ``run_ids`` not cached yet, as committed (new ones empty).

        Two queries for all of them: a central host meets thousands of runs at once (its
        start, a fleet starting), and two queries per run cost it seconds.
        """
        missing = [run_id for run_id in dict.fromkeys(run_ids) if run_id not in self._runs]
        if not missing:
            return
        with self.cursor() as cursor:
            found = queries.get_runs(cursor, missing)
            leads = dict(
                cursor.execute(
                    "SELECT run_id, min(rank) FROM streams "
                    "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY run_id",
                    [list(found)],
                ).fetchall()
                if found
                else []
            )
        now = time.monotonic()
        for run_id in missing:
            run = fold.RunRow(run_id)
            values = found.get(run_id)
            if values is not None:
                for key, value in values.items():
                    setattr(run, key, value)
                run.config, run.summary = run.config or {}, run.summary or {}
                run.context, run.tags = run.context or {}, list(run.tags or [])
                run.lead_rank = leads.get(run_id)
            self._runs[run_id] = run
            self._used_at[run_id] = now

    def _ship(self) -> None:
        """Hand the rows gathered so far to the database thread (it inserts them now).

        Raises what an earlier insert of this transaction raised: ``REFUSED`` as it is,
        any other DuckDB error as ``StoreError``.

        The next rows code their run ids and keys afresh, so that an insert is given the
        names its rows use: DuckDB binds the list at each insert (10,000 names, those of a
        folder just caught up with, cost 17 ms of CPU a statement, a few 2 ms).
        """
        assert self._worker is not None
        for table, arrays, select in self._rows.inserts():
            try:
                operation = functools.partial(insert, table=table, arrays=arrays, select=select)
                self._worker.submit(operation)
            except REFUSED:
                raise
            except duckdb.Error as exc:
                raise StoreError(f"could not write to {self.path}: {exc}") from exc
        self._rows = PendingRows(Codes())

    def commit(self) -> Offsets:
        """Commit the rows, the run and stream rows and the offsets in one transaction.

        When DuckDB refuses a value, what was handled since the last commit is redone
        from the log without the events that cannot be stored (``_recover``).
        """
        self._resume_collector()
        if not self._touched_streams and not self._touched_runs:
            return dict(self._committed)
        assert self._worker is not None
        try:
            self._ship()
            self._worker.commit(functools.partial(upsert_all, **self._upserts()))
        except BaseException as exc:
            target = dict(self.taken)  # before ``_forget`` puts it back where committed
            self._worker.rollback()
            self._forget()
            if isinstance(exc, REFUSED) and not self._recovering:
                self._recover(target, exc)
                return dict(self._committed)
            if isinstance(exc, duckdb.Error):
                raise StoreError(f"could not write to {self.path}: {exc}") from exc
            raise
        # Only the touched streams' offsets were written (``_upserts``): a live commit
        # over thousands of finished streams copies none of theirs.
        self._committed.update({s: self.taken[s] for s in self._touched_streams})
        self._stored_streams |= self._touched_streams
        self._stored_runs |= self._touched_runs
        if self._set_aside:
            self.quarantined += len(self._set_aside)
            self._set_aside = []
            if self.durable:
                quarantine.publish_count(self.root, self.name, self.quarantined)
        if self._touched_runs and self._snapshots is not None:
            self._snapshots.due()
        now = time.monotonic()
        for run_id in self._touched_runs:
            self._used_at[run_id] = now
            self._used_at.move_to_end(run_id)
        self._touched_runs, self._touched_streams = set(), set()
        self._trim_runs(now)
        return dict(self._committed)

    def _trim_runs(self, now: float) -> None:
        """Drop the least recently used runs while more than ``_CACHED_RUNS`` are cached,
        but none used within ``_LIVE_S`` (on a central host: its live runs, which a commit
        may touch only some of); reloading one costs two queries.

        Runs leave from the old end, each once, so a commit costs what it touched, not
        what is cached: a host that just caught up with 10,000 finished runs holds them
        all for a minute while it commits its live runs many times a second.
        """
        horizon = now - _LIVE_S
        used = self._used_at
        while len(used) > _CACHED_RUNS:
            run_id, at = next(iter(used.items()))
            if at >= horizon:
                return
            del used[run_id], self._runs[run_id]

    def _resume_collector(self) -> None:
        """End the pause that ``handle`` began."""
        if self._pause is not None:
            pause, self._pause = self._pause, None
            pause.close()

    def _upserts(self) -> dict[str, Any]:
        """The rows of runs, streams and offsets this commit replaces (of the runs
        committed before and changed by metrics only, the step and time)."""
        streams = sorted(self._touched_streams)
        runs = [self._runs[run_id] for run_id in sorted(self._touched_runs)]
        stepped = {run.run_id for run in runs if self._run_stored(run)}  # before run_values
        return {
            "runs": [run_values(run) for run in runs if run.run_id not in stepped],
            "steps": [
                [run.run_id, run.last_step, run.updated_at] for run in runs if run.run_id in stepped
            ],
            "streams": [
                stream_values(row)
                for s in streams
                if (row := self._streams.get(s)) is not None and not self._stored(s, row)
            ],
            "offsets": [
                [s, self.taken[s].segment, self.taken[s].position, self.taken[s].seq]
                for s in streams
            ],
        }

    def _run_stored(self, run: fold.RunRow) -> bool:
        """Whether ``run``'s row is in the database but for ``last_step`` and
        ``updated_at``: committed since it was loaded, and no event but metrics and
        system samples since (``fold.apply`` drops the JSON it keeps)."""
        return run.json is not None and run.run_id in self._stored_runs

    def _stored(self, stream: str, row: fold.StreamRow) -> bool:
        """Whether ``row`` is in the database as it is: committed since it was loaded, and
        unchanged since (``fold.apply`` drops the values it keeps). A host's live streams
        mostly grow by metrics, which leave their row as it was."""
        return row.values is not None and stream in self._stored_streams

    def _reset(self) -> None:
        self._rows = PendingRows(Codes())
        self._runs, self._used_at = {}, OrderedDict()
        self._touched_runs, self._touched_streams = set(), set()
        self._stored_streams, self._stored_runs = set(), set()
        self._set_aside = []

    def _forget(self) -> None:
        """After a failed commit: back to what the database holds."""
        self._stored_streams, self._stored_runs = set(), set()  # even if reading fails
        with contextlib.suppress(duckdb.Error):
            self._load()

    def _abandon(self, cause: BaseException) -> None:
        """Drop the open transaction, then redo what it held from the log (``_recover``)."""
        assert self._worker is not None
        target = dict(self.taken)
        self._worker.rollback()
        self._forget()
        if self._recovering:
            raise StoreError(f"could not write to {self.path}: {cause}") from cause
        self._recover(target, cause)

    def _recover(self, target: Offsets, cause: BaseException) -> None:
        """Store everything from the committed offsets up to ``target`` again, read from
        the log in small batches, each committed on its own; a batch that fails is
        narrowed down to the events that cannot be stored, which are quarantined."""
        logger.warning(
            "waddle: %s could not store a batch (%s: %s); storing it again piece by piece "
            "to set aside the events that cannot be stored",
            self.name,
            type(cause).__name__,
            str(cause).splitlines()[0] if str(cause) else "",
        )
        reader = LogReader(self.root, batch_bytes=RECOVERY_BATCH_BYTES)
        self._recovering = True
        try:
            for stream, end in sorted(target.items()):
                offset = self._committed.get(stream, Offset())
                while _before(offset, end):
                    batch = reader.read(stream, offset)
                    if batch.offset == offset:
                        break  # the log ends before ``end``: nothing more to redo
                    self._settle(_clip(batch, end), offset)
                    offset = self.taken[stream]
        finally:
            self._recovering = False

    def _settle(self, batch: Batch, start: Offset) -> None:
        """Commit one batch read from ``start``, quarantining the events that keep it
        from being stored (found by trial inserts, each rolled back)."""
        kept = _open(batch.events)
        misfits: list[quarantine.Quarantined] = []
        failure = self._trial(batch.stream, kept)
        if failure is not None and (blameless := self._trial(batch.stream, [])) is not None:
            # Even no event at all fails: the store, not an event, is at fault.
            raise StoreError(f"could not write to {self.path}: {blameless}") from blameless
        while failure is not None:
            culprit, failure = self._first_misfit(batch.stream, kept, failure)
            misfits.append(quarantine.set_aside(batch.stream, culprit, _reason(failure)))
            kept = [event for event in kept if event is not culprit]
            failure = self._trial(batch.stream, kept)
        self._forget()
        self.taken[batch.stream] = batch.offset
        self._take(batch.stream, kept, quarantine.new_corruption(batch, start))
        for record in misfits:
            self._aside(record)
        self._touched_streams.add(batch.stream)
        self.commit()
        for record in misfits:
            logger.error(
                "waddle: %s set aside stream %r seq %s, which cannot be stored: %s. It is "
                "in the quarantine table; the events after it are stored.",
                self.name,
                record.stream,
                record.seq,
                record.reason,
            )

    def _first_misfit(
        self, stream: str, events: list[dict[str, Any]], failure: BaseException
    ) -> tuple[dict[str, Any], BaseException]:
        """The first event whose addition makes ``events`` fail (all of them fail),
        found by bisecting prefixes, and what it failed with."""
        good, bad = 0, len(events)
        while bad - good > 1:
            middle = (good + bad) // 2
            found = self._trial(stream, events[:middle])
            if found is None:
                good = middle
            else:
                bad, failure = middle, found
        return events[bad - 1], failure

    def _trial(self, stream: str, events: list[dict[str, Any]]) -> BaseException | None:
        """Fold ``events`` from the committed state and insert them in a transaction that
        is rolled back; what failed, or None when they can be stored."""
        assert self._con is not None
        self._forget()
        cursor = self._con.cursor()
        try:
            self._fold(stream, events)
            self._touched_streams.add(stream)
            self.taken.setdefault(stream, Offset())  # an offsets row to write, as a commit does
            upserts = self._upserts()
            cursor.execute("BEGIN TRANSACTION")
            for table, arrays, select in self._rows.inserts():
                insert(cursor, table=table, arrays=arrays, select=select)
            upsert_all(cursor, **upserts)
        except (*UNFOLDABLE, *REFUSED) as exc:
            return exc
        finally:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            cursor.close()
            self._forget()
        return None

    def close(self) -> None:
        """Roll back what was not committed, publish a last snapshot, close the database."""
        self._resume_collector()
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


def _open(events: list[Event]) -> list[dict[str, Any]]:
    """The events as the fold reads them: open JSON objects, whose fields it stores even
    when no event type names them (``extra="allow"`` in ``waddle.events``)."""
    return cast("list[dict[str, Any]]", events)


def _console(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["stream"], event["text"]


def _artifact(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(event[name] for name in ("name", "kind", "path", "size", "sha256"))


def _rank(event: dict[str, Any]) -> int:
    rank = event.get("rank")
    return rank if type(rank) is int and rank >= 0 else 0


def _before(offset: Offset, end: Offset) -> bool:
    return (offset.segment, offset.position) < (end.segment, end.position)


def _clip(batch: Batch, end: Offset) -> Batch:
    """``batch`` without what lies past ``end`` (what was handled before the failure)."""
    if not _before(end, batch.offset):
        return batch
    return dataclasses.replace(
        batch,
        events=[event for event in batch.events if event["seq"] <= end.seq],
        offset=end,
        corrupt=[
            item
            for item in batch.corrupt
            if (quarantine.segment_of(item), item.offset) < (end.segment, end.position)
        ],
    )


def _reason(failure: BaseException) -> str:
    first = str(failure).splitlines()[0] if str(failure) else ""
    return f"{type(failure).__name__}: {first}"[:1000]

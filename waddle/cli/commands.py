"""What the read and maintenance commands do: ``ls``, ``show``, ``export``, ``gc``, ``consumers``.

``waddle.cli.parser`` parses arguments and calls these; tests call them directly. Each writes
its report to ``out`` and returns the exit code; errors are ``WaddleError``s that the
CLI turns into one line on stderr.

Freshness: when no writer holds the store, ``ls``, ``show`` and ``export`` first bring it
up to date with the log themselves (``waddle.consumers.duckdb.refresh``: the DuckDB
writer, run once in this process), so they work right after a training script. Next to
a running writer (``waddle serve``, ``waddle-consume``) ``ls`` and ``show`` read the
database, or the runs snapshot the writer publishes when it holds the file (see
``waddle.store.schema``); ``export`` then rebuilds the run's metrics from the log in
memory, with the writer's own code, as long as retention has not removed the start of
the run's streams.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import orjson

from waddle.consumers.duckdb.refresh import refresh
from waddle.errors import StoreLockedError, UsageError
from waddle.eventlog.reader import LogReader
from waddle.eventlog.record import encode
from waddle.eventlog.segment import list_segments, segment_name
from waddle.ids import check_id, run_id_of_stream
from waddle.paths import log_dir
from waddle.store import queries
from waddle.store import schema as store

FORMATS = ("csv", "parquet")
STDOUT = "-"


def _time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")


def _snapshot_note(reader: store.Reader, out: TextIO) -> None:
    if reader.from_snapshot:
        age = time.time() - reader.path.stat().st_mtime
        out.write(
            f"(the database is held by a running writer; read its runs snapshot, "
            f"updated {age:.0f}s ago)\n"
        )


def fresh(root: Path, db_path: Path) -> Path:
    """``db_path``, brought up to date (``refresh``); a clear error when ``root`` holds
    neither a log nor that database (no run yet, or the wrong folder)."""
    refresh(root, db_path)
    if not db_path.exists() and not log_dir(root).is_dir():
        raise UsageError(
            f"no runs in {root} yet: log one with waddle.init(), or point --dir (or "
            "$WADDLE_DIR) at your Waddle folder"
        )
    return db_path


def resolve_run(con: Any, ref: str) -> str:
    """The run id ``ref`` names: an id, an id prefix or a name (unique, else an error
    listing the candidates)."""
    if con.execute("SELECT 1 FROM runs WHERE run_id = ?", [ref]).fetchone():
        return ref
    found = con.execute(
        "SELECT run_id, name, project FROM runs WHERE starts_with(run_id, ?) OR name = ? "
        "ORDER BY started_at, run_id",
        [ref, ref],
    ).fetchall()
    if len(found) == 1:
        return str(found[0][0])
    if not found:
        raise UsageError(f"no run {ref!r} (by id, id prefix or name); `waddle ls` lists the runs")
    listed = "; ".join(
        f"{run_id} ({name or '-'}, {project or '-'})" for run_id, name, project in found
    )
    raise UsageError(f"{ref!r} names {len(found)} runs: {listed}; give more of the id")


def ls(db_path: Path, out: TextIO, project: str | None = None) -> int:
    """List runs: id, project, name, status, start, duration, last step."""
    with store.open_reader(db_path) as reader:
        runs = queries.list_runs(reader.con, project)
        rows = [["RUN", "PROJECT", "NAME", "STATUS", "STARTED", "DURATION", "STEP"]]
        for run in runs:
            step = run["last_step"]
            rows.append(
                [
                    run["run_id"],
                    run["project"] or "-",
                    run["name"] or "-",
                    run["status"],
                    _time(run["started_at"]),
                    _duration(run["duration"]),
                    "-" if step is None else str(step),
                ]
            )
        _table(rows, out)
        if not runs:
            out.write("(no runs)\n")
        _snapshot_note(reader, out)
    return 0


def _json(value: Any) -> str:
    """Indented JSON for people; NaN and infinities print as such, never as null."""
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def show(db_path: Path, ref: str, out: TextIO, *, as_json: bool = False) -> int:
    """Print one run (by id, id prefix or name): identity and status, then config,
    summary and context."""
    with store.open_reader(db_path) as reader:
        run = queries.get_run(reader.con, resolve_run(reader.con, ref))
        if run is None:
            raise UsageError(f"no run {ref!r} in {reader.path}; `waddle ls` lists the runs")
        if as_json:
            out.write(encode(run).decode())
            return 0
        exit_code = "" if run["exit_code"] is None else f" (exit code {run['exit_code']})"
        duration = None
        if run["started_at"] is not None:
            end = run["finished_at"] or run["updated_at"]
            duration = None if end is None else end - run["started_at"]
        fields = [
            ("run", run["run_id"]),
            ("project", run["project"]),
            ("name", run["name"]),
            ("status", f"{run['status']}{exit_code}"),
            ("started", _time(run["started_at"])),
            ("duration", _duration(duration)),
            ("last step", run["last_step"]),
            ("tags", ", ".join(run["tags"] or []) or "-"),
            ("group", run["group_name"]),
            ("job type", run["job_type"]),
            ("notes", run["notes"]),
        ]
        for label, value in fields:
            out.write(f"{label + ':':<11}{'-' if value is None else value}\n")
        for section in ("config", "summary", "context"):
            out.write(f"\n{section}:\n{_json(run[section] or {})}\n")
        _snapshot_note(reader, out)
    return 0


def export(
    root: Path,
    db_path: Path,
    ref: str,
    fmt: str,
    target: Path | None,
    out: TextIO,
    *,
    wide: bool = False,
    data: BinaryIO | None = None,
) -> int:
    """Write a run's metrics to CSV or Parquet: long (key, step, ts, value) or ``wide``
    (one row per step, one column per metric, the last value logged at that step).

    ``target`` ``-`` writes the file to ``data`` (default: stdout), the report to ``out``.
    """
    if fmt not in FORMATS:
        raise UsageError(f"format must be csv or parquet, got {fmt!r}")
    try:
        reader: store.Reader | None = store.open_reader(db_path)
    except StoreLockedError:
        reader = None
    run_id: str | None = None
    if reader is not None and reader.from_snapshot:
        with reader:  # the snapshot names the runs; the metrics come from the log
            run_id = resolve_run(reader.con, ref)
        reader = None
    with tempfile.TemporaryDirectory(prefix="waddle-export-") as scratch:
        to_stdout = target is not None and str(target) == STDOUT
        file = Path(scratch) / f"out.{fmt}" if to_stdout else None
        if reader is None:
            run_id = run_id or check_id(ref, "run id")
            file = file or target or Path(f"{run_id}.{fmt}")
            count = _export_from_log(root, run_id, fmt, file, wide)
            source = "the log (the database is held by a running writer)"
        else:
            with reader:
                run_id = resolve_run(reader.con, ref)
                file = file or target or Path(f"{run_id}.{fmt}")
                count = _write_metrics(reader.con, run_id, fmt, file, wide)
            source = str(db_path)
        if to_stdout:
            sink = data or sys.stdout.buffer
            with open(file, "rb") as handle:
                shutil.copyfileobj(handle, sink)
            sink.flush()
            file = Path("stdout")
    shape = f"{count} steps" if wide else f"{count} metric values"
    out.write(f"wrote {shape} of run {run_id} to {file} (from {source})\n")
    return 0


def _write_metrics(con: Any, run_id: str, fmt: str, target: Path, wide: bool) -> int:
    """Write the file; the rows written."""
    if not wide:
        return int(queries.export_metrics(con, run_id, target, fmt))
    check_id(run_id, "run id")  # it goes into the SQL text below
    (keys,) = con.execute(
        "SELECT count(DISTINCT key) FROM metrics WHERE run_id = ?", [run_id]
    ).fetchone()
    table = (
        f"PIVOT (SELECT step, key, value, ts FROM metrics WHERE run_id = '{run_id}') "
        "ON key USING arg_max(value, ts) GROUP BY step ORDER BY step"
        if keys
        else "SELECT NULL::BIGINT AS step WHERE false"
    )
    literal = str(target).replace("'", "''")
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
    con.execute(f"COPY ({table}) TO '{literal}' ({options})")
    (steps,) = con.execute(
        "SELECT count(DISTINCT step) FROM metrics WHERE run_id = ?", [run_id]
    ).fetchone()
    return int(steps)


def _streams_of(reader: LogReader, run_id: str) -> list[str]:
    """The streams whose ``run`` event names ``run_id``; refuses if the log lost a start."""
    found = []
    for stream in reader.streams():
        segments = list_segments(reader.log_dir / stream)
        if not segments:
            continue
        if segments[0] != 0:
            if run_id_of_stream(stream) == run_id:
                raise UsageError(
                    f"retention removed the start of stream {stream!r} from the log, so the "
                    "log no longer holds the whole run; stop the writer and export from "
                    "the database"
                )
            continue
        with open(reader.log_dir / stream / segment_name(0), "rb") as handle:
            line = handle.readline()
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if type(event) is dict and event.get("type") == "run" and event.get("run_id") == run_id:
            found.append(stream)
    return found


class _RunReader(LogReader):
    """A log reader that sees only some streams."""

    def __init__(self, root: Path, streams: list[str]) -> None:
        super().__init__(root)
        self.only = streams

    def streams(self) -> list[str]:
        return [s for s in super().streams() if s in self.only]


def _export_from_log(root: Path, run_id: str, fmt: str, target: Path, wide: bool) -> int:
    """Fold the run's streams into a scratch store with the writer's code, then export."""
    from waddle.consumers.base import run_consumer
    from waddle.consumers.duckdb.writer import DuckDBWriter

    streams = _streams_of(LogReader(root), run_id)
    if not streams:
        raise UsageError(f"no stream of run {run_id!r} in the log under {root}")
    with tempfile.TemporaryDirectory(prefix="waddle-export-") as scratch:
        path = Path(scratch) / "run.duckdb"
        writer = DuckDBWriter(root, path, durable=False, snapshot_interval=0)
        run_consumer(writer, root, threading.Event(), once=True, reader=_RunReader(root, streams))
        with store.connect(path, read_only=True) as con:
            return _write_metrics(con, run_id, fmt, target, wide)


def gc(root: Path, out: TextIO, *, dry_run: bool = False) -> int:
    """Delete the sealed segments every registered durable consumer has committed past."""
    from waddle.consumers.retention import collect

    result = collect(root, dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    for item in [*result.freed, *result.blobs]:
        out.write(f"{verb} {item.path} ({item.size} bytes)\n")
    if result.note:
        out.write(result.note + "\n")
    else:
        out.write(
            f"{verb} {len(result.freed)} segments, {result.bytes / 2**20:.1f} MiB, and "
            f"{len(result.blobs)} blobs, {result.blob_bytes / 2**20:.1f} MiB "
            f"(consumers: {', '.join(result.consumers)})\n"
        )
    return 0


def consumers(root: Path, out: TextIO) -> int:
    """List registered consumers with their lag per stream (events and bytes behind)."""
    from waddle.consumers.lag import lag
    from waddle.consumers.quarantine import published_count
    from waddle.consumers.registry import StateStore

    registry = StateStore(root)
    registered = registry.registered()
    if not registered:
        out.write("(no registered consumers)\n")
    for registration in registered:
        running = "running" if registry.is_running(registration.name) else "not running"
        age = time.time() - registration.updated_at
        aside = published_count(root, registration.name)
        note = f", {aside} quarantined (see its quarantine table)" if aside else ""
        out.write(f"{registration.name}  ({running}, offsets published {age:.0f}s ago{note})\n")
        rows = [["  STREAM", "EVENTS BEHIND", "BYTES BEHIND"]]
        for stream, behind in lag(root, registration.offsets).items():
            rows.append([f"  {stream}", str(behind.events), str(behind.bytes)])
        if len(rows) > 1:
            _table(rows, out)
    return 0


def consumers_rm(root: Path, name: str, out: TextIO) -> int:
    """Unregister a consumer: retention stops holding segments for it."""
    from waddle.consumers.registry import StateStore

    if not StateStore(root).remove(name):
        raise UsageError(f"no registered consumer {name!r}; `waddle consumers` lists them")
    out.write(f"removed consumer {name!r}; retention no longer holds segments for it\n")
    return 0

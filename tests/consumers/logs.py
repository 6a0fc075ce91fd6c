"""Writing real logs for the consumer tests, and reading tables back for comparison.

Streams are written with the real ``StreamWriter`` (no context collection, no git), so
fixtures are fast and their events are exactly what a producer would append.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import duckdb

from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.segment import list_segments, log_dir, segment_name
from waddle.eventlog.writer import StreamWriter

Payload = Callable[[int], dict[str, Any]]
# The waddle-consume and waddle commands as real processes (the installed entry points).
CONSUME = [
    sys.executable,
    "-c",
    "import sys, waddle.cli.parser; sys.exit(waddle.cli.parser.consume_main())",
]
WADDLE = [sys.executable, "-c", "import sys, waddle.cli.parser; sys.exit(waddle.cli.parser.main())"]


def numbers(step: int) -> dict[str, Any]:
    """Plain numeric metrics."""
    return {"loss": 1.0 / (step + 1), "acc": step % 7, "lr": 0.001 * step}


def mixed(step: int) -> dict[str, Any]:
    """Every kind of logged value: ints, floats, non-finite, nested, and non-numbers."""
    return {
        "loss": [math.nan, math.inf, -math.inf, 0.5][step % 4] if step % 5 == 0 else step / 3,
        "count": step,
        "nested": {"a": step * 2, "b": {"c": -step}},
        "text": f"step {step}",
        "flag": step % 2 == 0,
        "nothing": None,
        "list": [step, step + 1],
    }


def run_fields(
    run_id: str,
    *,
    project: str = "proj",
    name: str | None = None,
    rank: int = 0,
    resumed: bool = False,
    config: dict[str, Any] | None = None,
    tags: Iterable[str] = (),
    started_at: float | None = None,
) -> dict[str, Any]:
    """The fields of a ``run`` event as the producer writes them."""
    return {
        "run_id": run_id,
        "project": project,
        "name": name or f"name-{run_id}",
        "config": config if config is not None else {"lr": 0.1},
        "tags": list(tags),
        "notes": None,
        "group": None,
        "job_type": None,
        "context": {"started_at": started_at if started_at is not None else time.time()},
        "rank": rank,
        "resumed": resumed,
    }


def stream_of(run_id: str, rank: int = 0) -> str:
    return run_id if rank == 0 else f"{run_id}.{rank}"


def open_stream(
    root: Path, run_id: str, *, rank: int = 0, segment_bytes: int = 1 << 20, resume: bool = False
) -> StreamWriter:
    return StreamWriter(
        log_dir(root) / stream_of(run_id, rank), resume=resume, segment_bytes=segment_bytes
    )


def write_run(
    root: Path,
    run_id: str,
    steps: int,
    *,
    payload: Payload = numbers,
    rank: int = 0,
    segment_bytes: int = 1 << 20,
    finish: str | None = "finished",
    first_step: int = 0,
    resume: bool = False,
    **fields: Any,
) -> str:
    """A whole stream: run event, ``steps`` metrics events, a summary and a finish."""
    writer = open_stream(root, run_id, rank=rank, segment_bytes=segment_bytes, resume=resume)
    try:
        writer.append("run", run_fields(run_id, rank=rank, resumed=resume, **fields))
        for step in range(first_step, first_step + steps):
            writer.append("metrics", {"step": step, "data": payload(step)})
        if finish is not None:
            writer.append("summary", {"summary": {"steps": steps}})
            code = 0 if finish == "finished" else 1
            writer.append("finish", {"exit_code": code, "status": finish, "dropped": {}})
    finally:
        writer.close()
    return stream_of(run_id, rank)


def segments(root: Path, stream: str) -> list[Path]:
    folder = log_dir(root) / stream
    return [folder / segment_name(first) for first in list_segments(folder)]


def read_all(root: Path, stream: str, offset: Offset | None = None) -> list[Batch]:
    """Every batch of a stream from ``offset`` to its end, as the reader returns them."""
    reader = LogReader(root, batch_bytes=4096)
    offset = offset or Offset()
    batches = []
    while True:
        batch = reader.read(stream, offset)
        if batch.offset == offset:
            return batches
        batches.append(batch)
        offset = batch.offset


def normal(value: Any) -> Any:
    """A value that compares equal to itself (NaN becomes the string 'NaN')."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, (list, tuple)):
        return type(value)(normal(v) for v in value)
    return value


TABLE_ORDER = {
    "runs": "run_id",
    "streams": "stream",
    "metrics": "run_id, key, step, ts",
    "logged_values": "run_id, key, step, ts",
    "system": "run_id, rank, key, ts",
    "console": "run_id, rank, seq",
    "artifacts": "run_id, rank, ts, name",
    "_waddle.offsets": "stream",
}


def tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table of the store, rows sorted, NaN made comparable."""
    return {
        table: [
            normal(tuple(row))
            for row in con.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
        ]
        for table, order in TABLE_ORDER.items()
    }


def read_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return tables(con)

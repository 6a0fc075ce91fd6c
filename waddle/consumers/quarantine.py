"""The quarantine: what a consumer set aside instead of storing, and how many.

A consumer that meets an event it cannot store, or a line the reader skipped as bad,
records it here and goes on: one bad event never stops the events after it. Each record
names the stream, the seq (when known), the reason and the event's text, cut to
``MAX_EVENT_CHARS``. The DuckDB writer keeps them in its ``quarantine`` table, committed
with the offsets (docs/schema.md); the memory consumer in its store.

How many a durable consumer has set aside is also published to
``state/quarantine/<name>.json`` (atomically, after the commit that set them aside), so
``waddle consumers`` can show it while the consumer holds its store. The folder sits
beside the registry's files and is not one of them.
"""

from __future__ import annotations

import os
import re
import reprlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from waddle.errors import EncodeError
from waddle.eventlog.reader import Batch, Corruption, Offset
from waddle.eventlog.record import encode
from waddle.eventlog.segment import log_dir
from waddle.limits import INT64_MAX

COLUMNS = ("stream", "seq", "reason", "event", "quarantined_at")
MAX_EVENT_CHARS = 4096
_LEADING_SEQ = re.compile(rb'\s*\{\s*"seq"\s*:\s*(\d{1,19})[\s,}]')
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = MAX_EVENT_CHARS


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One event or line set aside: a row of the ``quarantine`` table."""

    stream: str
    seq: int | None
    reason: str
    event: str
    quarantined_at: float

    def row(self) -> tuple[Any, ...]:
        return (self.stream, self.seq, self.reason, self.event, self.quarantined_at)


def set_aside(stream: str, event: dict[str, Any], reason: str) -> Quarantined:
    """The record of an event that could not be stored."""
    seq = event.get("seq")
    return Quarantined(
        stream,
        seq if type(seq) is int and 0 <= seq <= INT64_MAX else None,
        reason,
        event_text(event),
        time.time(),
    )


def event_text(event: Any) -> str:
    """The event as JSON (or, when even that fails, its repr), cut to MAX_EVENT_CHARS."""
    try:
        text = encode(event)[:-1].decode()
    except EncodeError:
        text = _SHORT.repr(event)
    return text[:MAX_EVENT_CHARS]


def new_corruption(batch: Batch, before: Offset) -> list[Corruption]:
    """The bad lines of ``batch`` at or after ``before``: a replayed batch adds none (a
    stream created again starts over: all of its bad lines are new)."""
    if batch.restarted:
        return list(batch.corrupt)
    return [
        item
        for item in batch.corrupt
        if (segment_of(item), item.offset) >= (before.segment, before.position)
    ]


def segment_of(item: Corruption) -> int:
    """The first seq of the segment a bad line sits in (its file name)."""
    return int(item.segment.split(".", 1)[0])


def bad_line(item: Corruption, root: Path | None = None) -> Quarantined:
    """The record of a line the reader skipped; its text is read from the log under
    ``root`` when given (a line that is gone by now leaves the text empty)."""
    head = _line_head(root, item) if root is not None else b""
    match = _LEADING_SEQ.match(head)
    seq = int(match.group(1)) if match else None
    return Quarantined(
        item.stream,
        seq if seq is not None and seq <= INT64_MAX else None,
        f"bad line at segment {item.segment} byte {item.offset}: {item.reason}",
        head.decode("utf-8", "replace")[:MAX_EVENT_CHARS],
        time.time(),
    )


def _line_head(root: Path, item: Corruption) -> bytes:
    try:
        with open(log_dir(root) / item.stream / item.segment, "rb") as handle:
            handle.seek(item.offset)
            head = handle.read(MAX_EVENT_CHARS)
    except OSError:
        return b""
    end = head.find(b"\n")
    return head if end < 0 else head[:end]


def count_path(root: Path, name: str) -> Path:
    return Path(root) / "state" / "quarantine" / f"{name}.json"


def publish_count(root: Path, name: str, count: int) -> None:
    """Publish how many events consumer ``name`` has set aside (atomic replace)."""
    target = count_path(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps({"name": name, "count": count, "updated_at": time.time()}))
    os.replace(temporary, target)


def published_count(root: Path, name: str) -> int:
    """How many events consumer ``name`` last said it had set aside (0 if it never did)."""
    try:
        count = orjson.loads(count_path(root, name).read_bytes()).get("count", 0)
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return 0
    return count if type(count) is int else 0

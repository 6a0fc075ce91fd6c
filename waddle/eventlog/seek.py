"""Reading the log backwards: where a line starts, and the event just before a position.

The tailing reader needs them to tell whether an offset still fits its file, and which
seq (or event type) came before it; they read at most ``MAX_LINE_BYTES`` back, in
blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

from waddle.eventlog.record import decode

MAX_LINE_BYTES = 64 << 20
_BACK_BLOCK = 64 << 10


def line_start(handle: BinaryIO, end: int) -> int | None:
    """Where the line holding the byte before ``end`` starts: after the ``\\n`` before
    it, or 0. None when that is more than ``MAX_LINE_BYTES`` back (an over-long line)."""
    lowest = max(0, end - MAX_LINE_BYTES - 1)
    at = end
    while at > lowest:
        start = max(lowest, at - _BACK_BLOCK)
        handle.seek(start)
        cut = handle.read(at - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        at = start
    return 0 if lowest == 0 else None


def event_before(path: Path | str, position: int) -> dict[str, Any] | None:
    """The event on the line that ends just before ``position``; None if it has none."""
    if position <= 0:
        return None
    try:
        with open(path, "rb") as handle:
            start = line_start(handle, position - 1)
            if start is None:
                return None
            handle.seek(start)
            line = handle.read(position - start)
    except FileNotFoundError:
        return None
    events, _, _ = decode(line)
    return events[0] if events else None


def seq_before(path: Path | str, position: int) -> int | None:
    """The seq of the line that ends just before ``position``; None if it has none."""
    event = event_before(path, position)
    return None if event is None else event["seq"]

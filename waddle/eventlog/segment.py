"""Segment files: naming, listing, the one-writer lock, and repairing a torn tail.

A stream is a folder ``<root>/log/<stream>/`` of segments named by the seq of their first
event (20 digits). The newest segment is the active one; the others are sealed.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

import orjson

from waddle.errors import StreamLockedError
from waddle.paths import log_dir as log_dir  # re-exported: the log layer names it here

SUFFIX = ".ndjson"
_SEGMENT_NAME = re.compile(r"[0-9]{20}\.ndjson")  # ASCII digits only, exactly 20
LOCK_NAME = ".lock"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


def segment_name(first_seq: int) -> str:
    """``00000000000000041873.ndjson`` for a segment whose first event has seq 41873."""
    return f"{first_seq:020d}{SUFFIX}"


def list_segments(stream_dir: Path) -> list[int]:
    """The first seqs of a stream's segments, oldest first; [] for a missing folder."""
    try:
        names = os.listdir(stream_dir)
    except FileNotFoundError:
        return []
    return sorted(int(name[:20]) for name in names if _SEGMENT_NAME.fullmatch(name))


def acquire_lock(stream_dir: Path) -> int:
    """Hold the stream's advisory lock; returns its descriptor (the lock dies with it).

    flock locks belong to the open file description, so a second writer in the same
    process is refused just as one in another process is; a crashed writer's lock is
    released by the kernel, so no stale lock is ever left behind.
    """
    fd = os.open(stream_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StreamLockedError(
            f"stream {stream_dir.name!r} already has a writer (pid {holder}); one process "
            f"writes a stream. Give this process another run id, or set RANK for a "
            f"distributed job so each rank writes <run_id>.<rank>."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def repair_tail(path: Path) -> int | None:
    """Cut a torn final line off ``path``; return the seq of its last complete event.

    None when the segment holds no complete event. Used when a stream is resumed: the
    crashed writer's half line must not sit in front of new events. Lines end at ``\\n``
    only: a bare CR is JSON whitespace inside a line, as for every reader of the log.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    for line in reversed(data[:end].split(b"\n")):
        try:
            seq = orjson.loads(line).get("seq")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if type(seq) is int:
            return seq
    return None

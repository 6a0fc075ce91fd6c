"""Segment files: naming, listing, the one-writer lock, repairing a torn tail, and the
descriptors a tailing reader keeps open.

A stream is a folder ``<root>/log/<stream>/`` of segments named by the seq of their first
event (20 digits). The newest segment is the active one; the others are sealed.
"""

from __future__ import annotations

import fcntl
import os
import re
import resource
from pathlib import Path

import orjson

from waddle.errors import StreamLockedError
from waddle.paths import log_dir as log_dir  # re-exported: the log layer names it here

SUFFIX = ".ndjson"
_SEGMENT_NAME = re.compile(r"[0-9]{20}\.ndjson")  # ASCII digits only, exactly 20
LOCK_NAME = ".lock"
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024
TAILING_READERS = 2  # per process: a host's DuckDB writer and its broadcaster


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


class OpenSegments:
    """Descriptors of the segments a tailing reader reads, kept open between its reads.

    Reading a live stream each round then costs one ``pread`` instead of an open, a
    seek, reads and a close (at 3,000 live streams, a few syscalls per stream per round
    that each released and took back the GIL). A descriptor is used again only while
    the stream's folder is as it was when it was opened (``key``: its inode and mtime,
    taken by the caller): a segment replaced, added or deleted, or the stream created
    again, changes the folder's mtime. A caller that cannot vouch for the folder
    (``key`` None: modified too recently to trust its mtime) gets a descriptor to close
    itself. At most ``limit`` are kept (``descriptor_budget``); past that, reads open
    and close as before.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = descriptor_budget() if limit is None else limit
        self._open: dict[str, tuple[object, str, int]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def open(self, stream: str, path: str, key: object | None) -> tuple[int, bool]:
        """A descriptor of ``path`` (a segment of ``stream``), and whether it is kept
        (else the caller closes it). ``FileNotFoundError`` when the segment is gone."""
        held = self._open.get(stream)
        if held is not None:
            if key is not None and held[0] == key and held[1] == path:
                return held[2], True
            self.forget(stream)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        if key is None or len(self._open) >= self.limit:
            return fd, False
        self._open[stream] = (key, path, fd)
        return fd, True

    def forget(self, stream: str) -> None:
        """Close what is kept for ``stream`` (parked, gone, or read from elsewhere)."""
        held = self._open.pop(stream, None)
        if held is not None:
            os.close(held[2])

    def close(self) -> None:
        for stream in list(self._open):
            self.forget(stream)


def descriptor_budget() -> int:
    """Descriptors one tailing reader may keep: an eighth of the process's limit on open
    files, at most 4096. A process runs up to ``TAILING_READERS`` of them, and the
    host's stream writers are given what is left after those (``default_max_open``),
    so that all of them together stay within the limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(0, min(4096, soft // 8))

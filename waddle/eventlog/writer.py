"""The stream writer: gapless seqs, one ``write`` per event or batch, roll-over, fsync.

Guarantees:

* Each event reaches the operating system before ``append`` returns (one ``os.write`` on
  an ``O_APPEND`` descriptor, no user-space buffer): it survives a SIGKILL of this
  process. Power loss is guarded by ``fsync`` at roll-over, at ``close`` and, if asked,
  on a timer.
* seqs are gapless and unique: an event that cannot be written takes no seq, and an
  event that reached the file keeps its seq even when an exception (KeyboardInterrupt
  from Ctrl-C, any signal handler that raises) interrupts the write. A short write (a
  full disk) is truncated back to the last complete line, so a segment never holds a
  torn line followed by more events.
* A batch (``append_events``) is one ``write``, all or none: a failure leaves no part
  of it in the log and takes none of its seqs.
* Threads may share a writer: seq assignment and the write happen under ``lock``.
* I/O trouble never raises: the event is dropped, counted per cause, and logged once
  per cause. Only an unencodable event raises (``EncodeError``), and nothing is written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from waddle.errors import StreamLockedError, UsageError
from waddle.eventlog.record import encode
from waddle.eventlog.segment import (
    DEFAULT_SEGMENT_BYTES,
    acquire_lock,
    list_segments,
    repair_tail,
    segment_name,
)

logger = logging.getLogger("waddle")

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
# Bytes written between checks that the active segment still has a name on disk.
_CHECK_EVERY_BYTES = 256 * 1024
_REOPEN_BACKOFF_S = 1.0


_live_writers: weakref.WeakSet[StreamWriter] = weakref.WeakSet()


def _disown_after_fork() -> None:
    """In a forked child, let go of every writer the parent had.

    The child shares the parent's open files: keeping them would keep the stream lock
    alive after the parent dies, and writes from the child would collide with the
    parent's seqs. The child's copies are closed (the parent's lock is untouched) and
    anything the child logs is dropped and counted as ``forked child``.
    """
    for writer in list(_live_writers):
        writer._closed.set()
        writer._close_fd()
        writer._release_lock()
        writer._disowned = True


os.register_at_fork(after_in_child=_disown_after_fork)


class StreamWriter:
    """The single writer of one stream folder."""

    def __init__(
        self,
        stream_dir: Path,
        *,
        resume: bool = False,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        fsync_interval: float | None = None,
    ) -> None:
        self.stream_dir = stream_dir
        self.segment_bytes = segment_bytes
        self.dropped: dict[str, int] = {}
        self.lock = threading.Lock()
        stream_dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = acquire_lock(stream_dir)
        try:
            self.next_seq = self._recover(resume)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._fd: int | None = None
        self._size = 0
        self._torn = False
        # The segment size at which the slow path runs again (roll-over, link check);
        # 0 forces it (no segment open, a torn tail).
        self._limit = 0
        self._checked_seq = 0
        self._next_reopen = 0.0
        self._closed = threading.Event()
        self._disowned = False
        # The highest seq known to be on disk (fsynced); on resume nothing is known, so
        # what the log holds counts as unsynced until the first ``sync``.
        self.synced_seq = -1
        # Whether an fsync of this writer failed. Linux reports a writeback error once and
        # may drop the pages it hit, so no later fsync proves that the lines written
        # before it are on disk: ``synced_seq`` stays where it was from then on.
        self.sync_failed = False
        self._open_segment(resume)
        _live_writers.add(self)
        if fsync_interval:
            threading.Thread(
                target=self._sync_every, args=(fsync_interval,), name="waddle-fsync", daemon=True
            ).start()

    def _recover(self, resume: bool) -> int:
        """The next seq: 0 for a new stream, after the last complete event on resume."""
        segments = list_segments(self.stream_dir)
        if segments and not resume:
            raise UsageError(
                f"stream {self.stream_dir.name!r} already has a log in {self.stream_dir}; "
                "pass resume=True to continue it, or use another id"
            )
        for first in reversed(segments):
            last = repair_tail(self.stream_dir / segment_name(first))
            if last is not None:
                return last + 1
        return segments[0] if segments else 0

    def _open_segment(self, resume: bool = False) -> None:
        """Open the active segment: the newest one on resume, else a new one at next_seq."""
        segments = list_segments(self.stream_dir) if resume else []
        first = segments[-1] if segments else self.next_seq
        self._fd = os.open(self.stream_dir / segment_name(first), _OPEN_FLAGS, 0o644)
        self._segment = first
        self._size = os.fstat(self._fd).st_size
        self._checked_seq = self.next_seq
        self._set_limit()

    def _set_limit(self) -> None:
        self._limit = min(self._size + _CHECK_EVERY_BYTES, self.segment_bytes)

    def append(self, kind: str, fields: dict[str, Any]) -> int | None:
        """Write one event; its seq, or None when it was dropped (and counted)."""
        with self.lock:
            return self.append_locked(kind, fields)

    def append_locked(self, kind: str, fields: dict[str, Any]) -> int | None:
        """``append`` for a caller that already holds ``lock``."""
        event: dict[str, Any] = {"seq": self.next_seq, "ts": time.time(), "type": kind}
        event.update(fields)
        return event["seq"] if self.write_lines_locked(encode(event), 1) else None

    def append_event(self, event: dict[str, Any]) -> bool:
        """Write an event that already carries its seq, which must be ``next_seq``."""
        with self.lock:
            if event.get("seq") != self.next_seq:
                raise UsageError(f"event seq {event.get('seq')} is not the next {self.next_seq}")
            return self.write_lines_locked(encode(event), 1)

    def append_events(
        self, events: Sequence[Mapping[str, Any]], texts: list[bytes] | None = None
    ) -> int:
        """Write events that carry consecutive seqs from ``next_seq``, all or none.

        Every line is encoded first (an ``EncodeError`` writes nothing), then all go out
        in one ``os.write``. Returns how many were written: ``len(events)``, or 0 when
        the batch was dropped for I/O trouble (each event counted, no seq taken, a partly
        written batch cut back). A batch never straddles segments: the segment rolls over
        before it when it would not fit, so only a batch bigger than ``segment_bytes``
        makes a segment bigger than that.

        ``texts``, when given, are the events' JSON lines as received (no newline), which
        the caller parsed into ``events`` and checked: they are written as they are.
        """
        if texts is None:
            lines = b"".join([encode(event) for event in events])
        elif len(texts) != len(events):
            raise UsageError(f"{len(texts)} lines for {len(events)} events")
        else:
            lines = b"\n".join(texts) + b"\n" if texts else b""
        with self.lock:
            for index, event in enumerate(events):
                if event.get("seq") != self.next_seq + index:
                    raise UsageError(
                        f"event seq {event.get('seq')} is not the next {self.next_seq + index}"
                    )
            return len(events) if events and self.write_lines_locked(lines, len(events)) else 0

    def write_lines_locked(self, lines: bytes, count: int) -> bool:
        """Write ``count`` encoded events in one ``os.write``, all or none.

        The caller holds ``lock`` and encoded events whose seqs run from ``next_seq``.
        True when written; False when dropped for I/O trouble (each event counted, no
        seq taken, a partial write cut back). An exception raised into the call (Ctrl-C)
        propagates, with the seqs taken exactly when the whole line is in the file.
        """
        length = len(lines)
        if self._size + length > self._limit:
            problem = self._prepare(length)
            if problem:
                self._count(problem, count)
                return False
        start = self._size
        first = self.next_seq
        # The seqs (and bytes) are taken before the write, so that no moment exists where
        # the line is on disk and its seq still free: an exception raised into this code
        # between any two bytecodes (Ctrl-C, a signal handler) leaves them taken, and the
        # handler then asks the file whether the line landed. (A try costs nothing until
        # it catches; the hot path is the stores and the write.)
        try:
            self._size = start + length
            self.next_seq = first + count
            if os.write(self._fd, lines) == length:  # type: ignore[arg-type]
                return True
            cause = "short write"
        except OSError as exc:
            cause = _cause(exc)
        except BaseException:
            self._settle(start, first, length, count)
            raise
        self._settle(start, first, length, count)
        self._count(cause, count)
        return False

    def _settle(self, start: int, first: int, length: int, count: int) -> None:
        """After a write that failed or was interrupted, believe the file.

        The line at ``start`` keeps its seqs if all of it is in the file; otherwise the
        seqs are given back and whatever part of it reached the file is cut off.
        """
        try:
            landed = os.fstat(self._fd).st_size - start  # type: ignore[arg-type]
        except OSError:
            landed = -1
        if landed == length:
            self._size, self.next_seq = start + length, first + count
            return
        self._size, self.next_seq = start, first
        if landed:
            self._undo_partial()

    def _prepare(self, length: int) -> str | None:
        """The slow path before a write: repair a torn tail, check the link, roll over.

        Returns why the write cannot happen now, or None.
        """
        if self._closed.is_set():
            return "forked child" if self._disowned else "writer closed"
        if self._torn:
            self._undo_partial()
            if self._torn:
                return "torn tail"
        elif self._fd is not None:
            self._verify_linked()
        if self._fd is None:
            problem = self._reopen()
            if problem:
                return problem
        if self._size and self._size + length > self.segment_bytes:
            try:
                self._roll()
            except OSError as exc:
                return _cause(exc)
        self._set_limit()
        return None

    def _undo_partial(self) -> None:
        """Cut whatever part of a failed line reached the file; remember if we could not."""
        try:
            os.ftruncate(self._fd, self._size)  # type: ignore[arg-type]
        except OSError:
            self._torn = True
            self._limit = 0
        else:
            self._torn = False
            self._set_limit()

    def _verify_linked(self) -> bool:
        """False when the active segment was deleted under us (its folder removed).

        Writes to an unlinked file succeed and vanish, so the events since the last check
        are counted as lost, and the descriptor is closed so that a new segment starts.
        """
        with contextlib.suppress(OSError):
            if os.fstat(self._fd).st_nlink > 0:  # type: ignore[arg-type]
                self._checked_seq = self.next_seq
                return True
        self._count("segment deleted", self.next_seq - self._checked_seq)
        self._close_fd()
        return False

    def _reopen(self) -> str | None:
        """A new segment at ``next_seq`` (and folder, and lock if ours went with it).

        Tried at most once a second. Returns why it cannot be done, or None.
        """
        now = time.monotonic()
        if now < self._next_reopen:
            return "log unavailable"
        try:
            self.stream_dir.mkdir(parents=True, exist_ok=True)
            if os.fstat(self._lock_fd).st_nlink == 0:  # our lock file went with the folder
                fresh = acquire_lock(self.stream_dir)
                os.close(self._lock_fd)
                self._lock_fd = fresh
            self._open_segment()
        except StreamLockedError:
            self._next_reopen = now + _REOPEN_BACKOFF_S
            return "another writer took the stream"
        except OSError as exc:
            self._next_reopen = now + _REOPEN_BACKOFF_S
            return _cause(exc)
        return None

    def _roll(self) -> None:
        """Seal the active segment (fsync) and start a new one named by ``next_seq``."""
        self._fsync()
        if not self.sync_failed:
            self.synced_seq = self.next_seq - 1
        self._close_fd()
        self._fd = os.open(self.stream_dir / segment_name(self.next_seq), _OPEN_FLAGS, 0o644)
        self._segment = self.next_seq
        self._size = 0

    @property
    def end(self) -> tuple[int, int]:
        """Where the next line goes: the active segment (its first seq) and its size (a
        reader's offset after the last line written, for ``/ingest``'s hand-off)."""
        return self._segment, self._size

    def count_dropped(self, cause: str, n: int = 1) -> None:
        """Count ``n`` things lost to I/O trouble outside the log (a blob the disk refused):
        warned about once per cause, reported at finish with the log's own drops."""
        self._count(cause, n)

    def _count(self, cause: str, n: int) -> None:
        if n <= 0:
            return
        if cause not in self.dropped:
            logger.warning(
                "waddle: events are being dropped for stream %s (%s); training goes on, "
                "the count is reported at finish. Check the disk under %s.",
                self.stream_dir.name,
                cause,
                self.stream_dir,
            )
        self.dropped[cause] = self.dropped.get(cause, 0) + n

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def sync(self) -> bool:
        """fsync the active segment; whether it worked (a failure is logged, never raised).

        On success ``synced_seq`` moves to the last seq written, so that a caller that
        acknowledges events (the host's ``/ingest``) knows which are on disk. Once an
        fsync failed (``sync_failed``) it never does again, and this returns False.
        """
        with self.lock:
            if self._fd is None:
                return self.synced_seq == self.next_seq - 1 and not self.sync_failed
            last = self.next_seq - 1
            try:
                self._fsync()
            except OSError as exc:
                logger.warning("waddle: fsync of stream %s failed: %s", self.stream_dir.name, exc)
                return False
            if self.sync_failed:
                return False
            self.synced_seq = last
            return True

    def _fsync(self) -> None:
        """fsync the active segment; a failure is remembered (``sync_failed``) and raised."""
        try:
            os.fsync(self._fd)  # type: ignore[arg-type]
        except OSError:
            self.sync_failed = True
            raise

    def _sync_every(self, interval: float) -> None:
        while not self._closed.wait(interval):
            self.sync()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._limit = 0

    def discard(self, keep_log: bool) -> None:
        """Close after a failed start; a new stream's folder is removed if it holds nothing."""
        self.close()
        if not keep_log and self.next_seq == 0:
            for path in self.stream_dir.iterdir():
                path.unlink()
            self.stream_dir.rmdir()

    def close(self) -> None:
        """fsync, close the segment and release the stream lock. Safe to call twice."""
        if self._closed.is_set():
            return
        self._closed.set()
        self.sync()
        with self.lock:
            if self._fd is not None and self.next_seq > self._checked_seq:
                self._verify_linked()
            self._close_fd()
            self._release_lock()
        _live_writers.discard(self)

    def _release_lock(self) -> None:
        """Close the lock descriptor once; the number may be reused by anything after."""
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1


def _cause(exc: OSError) -> str:
    """A short name for an I/O failure: ENOSPC, EIO, ..."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)

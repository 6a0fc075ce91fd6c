"""The host's producer for ``/ingest``: one ``StreamWriter`` per stream, kept open.

Guarantees: idempotent by (stream, seq): events at or below what the host already holds
are acknowledged and not written again; a request whose first new event is beyond the
next expected seq is refused (``SeqGap``, nothing written). Requests for one stream are
serialised; different streams proceed in parallel. The new events of a stream's part
are written in one ``write``, all or none, and made durable before the answer (an
fsync, or one ``syncfs`` for the parts of a multi-stream request), so an acknowledged
event survives a power loss. A resend of events written but not yet synced (after a
restart that resumed the stream) is acknowledged only once they are synced. A write that
fails (a full disk) writes nothing of the part: ``WriteFailed`` names the highest seq
held, so the sender resumes from there.

A failed fsync (or a roll-over's) is different: Linux reports a writeback error once and
may drop the pages it hit, so a later fsync that succeeds proves nothing about the lines
written before it, and cutting them off would pull the segment from under the host's
readers (a reader past the end takes the stream for a new one). So the stream is failed
for this process: that part and every later one of the stream is answered
``WriteFailed`` with the highest seq known to be on disk, never acknowledged, until the
host restarts (logged once, at ERROR, with what to do).
Refusals are ``waddle.errors.IngestError``s; ``waddle.web.errors`` makes them answers.

Writers stay open (they hold each stream's lock, so a local producer of the same stream
is refused, and vice versa) until their stream's ``finish`` is written; past
``max_open`` the least recently used idle one is closed, and reopened (resumed) when its
stream sends again. ``Hints`` tell the host's own readers which streams grew: while a
writer here is open, nothing else can grow its stream.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from waddle.consumers.duckdb.handoff import Given, Handoff
from waddle.errors import (
    IngestClosed,
    IngestError,
    LogUnavailable,
    SeqGap,
    StreamConflict,
    StreamLockedError,
    WriteFailed,
)
from waddle.event_types import Event
from waddle.eventlog.reader import Offset
from waddle.eventlog.segment import (
    TAILING_READERS,
    descriptor_budget,
    list_segments,
    log_dir,
    segment_name,
)
from waddle.eventlog.watch import Hints
from waddle.eventlog.writer import StreamWriter

logger = logging.getLogger("waddle.web")

DEFAULT_MAX_OPEN = 256
MAX_OPEN_CEILING = 16_384
FD_RESERVE = 1024

# One stream's part of a request: its id, its checked events, their lines as received.
Part = tuple[str, Sequence[Event], list[bytes] | None]
Refusal = IngestError | StreamLockedError


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an ingest request did: the highest seq now held, and what it wrote."""

    stream: str
    seq: int
    written: int
    duplicates: int

    def to_json(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "seq": self.seq,
            "written": self.written,
            "duplicates": self.duplicates,
        }


class IngestLog:
    """Appends already-validated events with consecutive seqs to ``<root>/log``."""

    def __init__(
        self,
        root: Path,
        *,
        max_open: int | None = None,
        hints: Hints | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        """``max_open``: writers kept open (default: what the descriptor limit allows);
        ``hints``: told which streams this log opened, closed and grew; ``handoff``:
        given each part's new events once they are durable (the host's DuckDB writer
        takes them instead of parsing the same lines again)."""
        self.log_dir = log_dir(root)
        self.max_open = default_max_open() if max_open is None else max_open
        self.hints = hints
        self.handoff = handoff
        self._writers: OrderedDict[str, StreamWriter] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False
        # Streams whose fsync failed: the highest seq known to be on disk (see above).
        self._failed: dict[str, int] = {}
        # Open for the log's lifetime: syncfs reports the writeback errors that happened
        # since the descriptor it is given was opened, so a fresh one per call would
        # miss those between a write and that call's open.
        self._dir_fd = _open_directory(self.log_dir)

    def append(
        self, stream: str, events: Sequence[Event], texts: list[bytes] | None = None
    ) -> Outcome:
        """Write the events of ``events`` that the host does not hold yet (see above).

        ``texts``: the events' lines as received, written as they are (see
        ``StreamWriter.append_events``); without them the events are encoded.
        """
        result = self.append_parts([(stream, events, texts)])[0]
        if not isinstance(result, Outcome):
            raise result
        return result

    def append_parts(self, parts: Sequence[Part]) -> list[Outcome | Refusal]:
        """``append`` each part (of a distinct stream), each all or none on its own.

        A part's refusal is its result, not raised: the other parts are written. The
        new events of every part are made durable together (``durable``) before this
        returns, and the host's own readers are told which streams grew (``hints``).
        """
        results: list[Outcome | Refusal] = []
        unsynced: dict[int, StreamWriter] = {}  # result index: a writer to sync first
        grown: list[str] = []  # told to the readers even when unsynced: the lines are there
        with contextlib.ExitStack() as held:
            for stream in sorted({stream for stream, _, _ in parts}):
                held.enter_context(self._stream(stream))
            for stream, events, texts in parts:
                try:
                    outcome, writer = self._write(stream, events, texts)
                except (IngestError, StreamLockedError) as exc:
                    results.append(exc)
                    continue
                if writer is not None and outcome.seq > writer.synced_seq:
                    unsynced[len(results)] = writer  # new events, or a resend of unsynced ones
                if outcome.written:
                    grown.append(stream)
                results.append(outcome)
            failed = durable(self._dir_fd, list(unsynced.values()))
            given: list[Given] = []
            finished: list[str] = []
            for index, writer in unsynced.items():
                outcome = cast("Outcome", results[index])
                if writer in failed:  # not acknowledged, now or later (see above)
                    results[index] = self._fail(outcome.stream, writer)
                if not outcome.written:
                    continue
                if self.handoff is not None:
                    given.append(_given(writer, outcome, parts[index], writer in failed))
                if parts[index][1][-1]["type"] == "finish" and writer not in failed:
                    finished.append(outcome.stream)
            if given and self.handoff is not None:
                self.handoff.give(given)  # one call a request: the lock is the writer's too
            for stream in finished:  # its writer's descriptors serve live runs better
                self._close_writer(stream)
        if self.hints is not None and grown:
            self.hints.grew(grown)
        return results

    def _write(
        self, stream: str, events: Sequence[Event], texts: list[bytes] | None
    ) -> tuple[Outcome, StreamWriter | None]:
        """One part, under its stream's lock; not yet fsynced."""
        if stream in self._failed:
            raise WriteFailed(stream, self._failed[stream], "an fsync failed; restart the host")
        writer = self._writer(stream, create=bool(events))
        if writer is None:
            return Outcome(stream, -1, 0, 0), None
        if events and events[0]["seq"] == 0 < writer.next_seq:
            self._check_same_origin(stream, events[0])
        try:
            return _append(writer, stream, events, texts), writer
        except WriteFailed:
            if writer.sync_failed:  # the roll-over's fsync, before the write
                raise self._fail(stream, writer) from None
            raise

    def _fail(self, stream: str, writer: StreamWriter) -> WriteFailed:
        """Fail ``stream`` for this process after its fsync failed (see above); the
        refusal to answer."""
        self._failed[stream] = writer.synced_seq
        logger.error(
            "waddle: fsync of stream %s failed: its events after seq %d are not known to "
            "be on disk, and no later fsync can tell, so this host refuses the stream "
            "(503) until it restarts; the relays keep the events and send them again. "
            "Check the disk under %s (dmesg), then restart the host.",
            stream,
            writer.synced_seq,
            self.log_dir,
        )
        return WriteFailed(stream, writer.synced_seq, "fsync failed")

    def _check_same_origin(self, stream: str, first: Event) -> None:
        """Refuse a resend of seq 0 that comes from another process than the one held.

        Two machines that give a run the same id (``id="baseline"``) send the same stream
        id; without this check the second one's events would be taken for duplicates of
        the first one's and dropped without a word.
        """
        held = _first_event(self.log_dir / stream)
        if held is None or _origin(held) == _origin(first):
            return
        raise StreamConflict(stream, _describe(held), _describe(first))

    def held(self, stream: str) -> int:
        """The highest seq this host holds for ``stream`` (-1 for none)."""
        return self.append(stream, []).seq

    def _stream(self, stream: str) -> threading.Lock:
        """``stream``'s lock, to hold while writing it: one request per stream at a time
        (the lock itself, not a generator around it: a request may take thousands)."""
        with self._guard:
            self._check_open(stream)
            return self._locks.setdefault(stream, threading.Lock())

    def _check_open(self, stream: str) -> None:
        if self._closed:
            raise IngestClosed(stream)

    def _writer(self, stream: str, *, create: bool) -> StreamWriter | None:
        """The open writer of ``stream``; opened (resumed) if needed and allowed."""
        with self._guard:
            writer = self._writers.get(stream)
            if writer is not None:
                self._writers.move_to_end(stream)
                return writer
        stream_dir = self.log_dir / stream
        if not create and not list_segments(stream_dir):
            return None
        try:
            writer = StreamWriter(stream_dir, resume=True)
        except StreamLockedError as exc:
            raise StreamLockedError(
                f"stream {stream!r} is being written by a process on this host; "
                "a stream has one writer",
                stream=stream,
            ) from exc
        except OSError as exc:
            raise LogUnavailable(stream, str(exc)) from exc
        with self._guard:
            if self._closed:
                writer.close()
                self._check_open(stream)
            self._writers[stream] = writer
            if self.hints is not None:
                self.hints.cover(stream)
            self._evict()
        return writer

    def _evict(self) -> None:
        """Close least recently used writers past ``max_open``, skipping busy ones."""
        if len(self._writers) <= self.max_open:
            return  # the usual case: no copy of thousands of names per writer opened
        for stream in list(self._writers):
            if len(self._writers) <= self.max_open:
                return
            lock = self._locks[stream]
            if lock.acquire(blocking=False):
                try:
                    self._close_writer(stream, guarded=True)
                finally:
                    lock.release()

    def _close_writer(self, stream: str, *, guarded: bool = False) -> None:
        """Close ``stream``'s writer (its lock held by the caller; ``guarded``: and
        ``_guard``), so that a local producer may take the stream; its readers poll it
        again."""
        with contextlib.nullcontext() if guarded else self._guard:
            writer = self._writers.pop(stream, None)
        if self.hints is not None:
            self.hints.uncover(stream)
        if self.handoff is not None:
            self.handoff.forget(stream)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        """Close every writer (fsync, release the stream locks); later requests get 503."""
        with self._guard:
            self._closed = True
            writers = list(self._writers.items())
            self._writers.clear()
        for stream, writer in writers:
            with self._locks[stream]:
                writer.close()
            if self.hints is not None:
                self.hints.uncover(stream)
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def default_max_open() -> int:
    """Writers to keep open: two descriptors each (segment, lock), within this process's
    limit on open files less a reserve for sockets and the database and less what the
    tailing readers keep (one budget: each part alone fitting would still add up to
    EMFILE), so that a host taking thousands of live runs keeps each one's writer open
    instead of closing one and resuming another for every request."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return DEFAULT_MAX_OPEN
    if soft == resource.RLIM_INFINITY:
        return MAX_OPEN_CEILING
    readers = TAILING_READERS * descriptor_budget()
    return max(DEFAULT_MAX_OPEN, min(MAX_OPEN_CEILING, (soft - FD_RESERVE - readers) // 2))


def durable(directory: int | None, writers: Sequence[StreamWriter]) -> set[StreamWriter]:
    """Make what ``writers`` wrote durable; the writers for which that failed.

    Several writers: one ``syncfs`` of the filesystem holding the directory open as
    ``directory`` (Linux; a thousand fsyncs cost seconds, one syncfs milliseconds); when
    it fails (a writeback error anywhere on that filesystem since ``directory`` was
    opened), an fsync each tells which streams it hit. One writer: its fsync.
    """
    if len(writers) > 1 and _syncfs(directory):
        for writer in writers:
            writer.synced_seq = writer.next_seq - 1  # under its stream's lock: no writes
        return set()
    return {writer for writer in writers if not writer.sync()}


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return cast("Callable[[int], int]", function)


_SYNCFS = _load_syncfs()


def _open_directory(path: Path) -> int | None:
    """``path`` (created if needed) open for ``syncfs``; None where that is not used."""
    if _SYNCFS is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _syncfs(directory: int | None) -> bool:
    """Whether ``syncfs`` flushed the filesystem of the open ``directory`` without an
    error (False: do it by file)."""
    return _SYNCFS is not None and directory is not None and _SYNCFS(directory) == 0


def _given(writer: StreamWriter, outcome: Outcome, part: Part, failed: bool) -> Given:
    """What ``handoff`` is given of the events ``outcome`` wrote: their stream, offsets in
    the log and events; lines it cannot take as they are (not NDJSON, a non-finite value,
    which a reader of the log turns back into a float; unsynced) as None, a gap to read
    from the log."""
    _, events, texts = part
    fresh, lines = events[outcome.duplicates :], (texts or [])[outcome.duplicates :]
    segment, position = writer.end
    size = sum(map(len, lines)) + len(lines)
    start = Offset(segment, position - size, fresh[0]["seq"] - 1)
    events_given = None if failed or not lines or _non_finite(lines) else fresh
    return outcome.stream, start, Offset(segment, position, outcome.seq), events_given


def _non_finite(lines: list[bytes]) -> bool:
    """Whether ``lines`` may spell a non-finite number (``"NaN"``, ``"Infinity"``)."""
    text = b"".join(lines)
    return text.find(b'NaN"') >= 0 or text.find(b'Infinity"') >= 0


def _append(
    writer: StreamWriter,
    stream: str,
    events: Sequence[Event],
    texts: list[bytes] | None,
) -> Outcome:
    expected = writer.next_seq
    if events and events[0]["seq"] > expected:
        raise SeqGap(stream, expected, events[0]["seq"])
    held = min(len(events), expected - events[0]["seq"]) if events else 0  # seqs rise by one
    fresh = events[held:]
    if fresh and not writer.append_events(fresh, None if texts is None else texts[held:]):
        raise WriteFailed(stream, writer.next_seq - 1, _causes(writer))
    return Outcome(stream, writer.next_seq - 1, len(fresh), len(events) - len(fresh))


def _first_event(stream_dir: Path) -> dict[str, Any] | None:
    """The stream's seq-0 event as held, or None (retention removed it, or unreadable)."""
    try:
        with open(stream_dir / segment_name(0), "rb") as handle:
            event = orjson.loads(handle.readline())
    except (OSError, orjson.JSONDecodeError):
        return None
    return event if type(event) is dict else None


def _origin(event: Mapping[str, Any]) -> tuple[Any, ...]:
    """What identifies the process that started a stream: its run event's id and context."""
    context = event.get("context")
    if not isinstance(context, dict):
        context = {}
    return (
        event.get("type"),
        event.get("run_id"),
        context.get("host"),
        context.get("pid"),
        context.get("started_at"),
    )


def _describe(event: Mapping[str, Any]) -> str:
    _, run_id, host, pid, _ = _origin(event)
    return f"run {run_id!r} from host {host!r}, pid {pid!r}"


def _causes(writer: StreamWriter) -> str:
    return ", ".join(sorted(writer.dropped)) or "I/O error"

"""The host's producer for ``/ingest``: one ``StreamWriter`` per stream, kept open.

Guarantees: idempotent by (stream, seq): events at or below what the host already holds
are acknowledged and not written again; a request whose first new event is beyond the
next expected seq is refused (``SeqGap``, nothing written). Requests for one stream are
serialised; different streams proceed in parallel. The new events of a request are
written in one ``write``, all or none, and fsynced before the answer, so an acknowledged
event survives a power loss. A write that fails (a full disk) writes nothing of the
request: ``WriteFailed`` names the highest seq held, so the sender resumes from there.
Refusals are ``waddle.errors.IngestError``s; ``waddle.web.errors`` makes them answers.

Writers stay open (they hold each stream's lock, so a local producer of the same stream
is refused, and vice versa); past ``max_open`` the least recently used idle one is
closed, and reopened (resumed) when its stream sends again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from waddle.errors import (
    IngestClosed,
    LogUnavailable,
    SeqGap,
    StreamConflict,
    StreamLockedError,
    WriteFailed,
)
from waddle.event_types import Event
from waddle.eventlog.segment import list_segments, log_dir, segment_name
from waddle.eventlog.writer import StreamWriter

DEFAULT_MAX_OPEN = 256


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

    def __init__(self, root: Path, *, max_open: int = DEFAULT_MAX_OPEN) -> None:
        self.log_dir = log_dir(root)
        self.max_open = max_open
        self._writers: OrderedDict[str, StreamWriter] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closed = False

    def append(
        self, stream: str, events: Sequence[Event], texts: list[bytes] | None = None
    ) -> Outcome:
        """Write the events of ``events`` that the host does not hold yet (see above).

        ``texts``: the events' lines as received, written as they are (see
        ``StreamWriter.append_events``); without them the events are encoded.
        """
        with self._stream(stream):
            writer = self._writer(stream, create=bool(events))
            if writer is None:
                return Outcome(stream, -1, 0, 0)
            if events and events[0]["seq"] == 0 < writer.next_seq:
                self._check_same_origin(stream, events[0])
            return _append(writer, stream, events, texts)

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

    @contextmanager
    def _stream(self, stream: str) -> Iterator[None]:
        """Hold ``stream``'s lock: one request per stream at a time."""
        with self._guard:
            self._check_open(stream)
            lock = self._locks.setdefault(stream, threading.Lock())
        with lock:
            yield

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
            self._evict()
        return writer

    def _evict(self) -> None:
        """Close least recently used writers past ``max_open``, skipping busy ones."""
        for stream in list(self._writers):
            if len(self._writers) <= self.max_open:
                return
            lock = self._locks[stream]
            if lock.acquire(blocking=False):
                try:
                    self._writers.pop(stream).close()
                finally:
                    lock.release()

    def close(self) -> None:
        """Close every writer (fsync, release the stream locks); later requests get 503."""
        with self._guard:
            self._closed = True
            writers = list(self._writers.items())
            self._writers.clear()
        for stream, writer in writers:
            with self._locks[stream]:
                writer.close()


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
    if fresh:
        writer.sync()
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

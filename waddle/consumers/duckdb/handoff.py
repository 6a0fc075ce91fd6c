"""``/ingest`` handing its parsed, durably written events to the host's DuckDB writer.

Why: on a central host every event was parsed twice, once by ``/ingest`` to check it
and once more by the DuckDB writer reading the same lines back from the log (a fifth of
the host's CPU in a backlog, py-spy). ``IngestLog`` gives each part it wrote and synced
to a ``Handoff`` (``give``), with the log offsets before and after its lines; the
writer's ``HandoffReader`` serves a stream's read from there when a hand-off starts
exactly at the offset it reads from, and reads the log otherwise.

Guarantees: the log stays the truth. A hand-off is used only when it is contiguous with
the reader's offset (same segment, byte and seq), so the batch it makes is the one the
log would have given, with the same end offset, which the writer commits in the same
transaction as its rows. A hand-off that is missing (never given: a JSON body, a value
that is not finite, a failed sync; dropped past ``MAX_EVENTS``; taken by a writer that
restarted since), stale (behind the offset) or not contiguous is no error: that read
goes to the log. A part that starts a new segment continues the part before it (the
writer rolled over after it: nothing else writes a stream while ``/ingest`` holds it).
So a lost hand-off delays an event by one read at most, never loses or doubles it.
Memory: at most ``MAX_EVENTS`` events wait.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from waddle.event_types import Event
from waddle.eventlog.reader import Batch, LogReader, Offset

# Events held for the writer at most; beyond it, hand-offs are dropped (read from the log).
MAX_EVENTS = 1 << 18
_START = Offset()


# One part written by ``IngestLog``: stream, offsets before and after it, its events
# (None: not handed off).
Given = tuple[str, Offset, Offset, Sequence[Event] | None]


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: Offset
    end: Offset
    events: Sequence[Event]


class Handoff:
    """Parts written by ``IngestLog``, per stream in log order, until the writer takes them."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.max_events = max_events
        self._chunks: dict[str, deque[_Chunk]] = {}
        self._last: dict[str, Offset] = {}  # per stream: the end of the last part written
        self._held = 0
        self._lock = threading.Lock()

    def give(self, parts: Sequence[Given]) -> None:
        """For each part, ``events`` were written (and synced) from ``start`` to ``end`` of
        ``stream``'s log; ``None``: lines were written there that are not handed off (read
        the log). A request's parts in one call: one taking of the lock."""
        with self._lock:
            for stream, start, end, events in parts:
                last = self._last.get(stream)
                if last is not None and start.position == 0 and start.seq == last.seq:
                    # The writer rolled over to a new segment: the one before ends where
                    # the last part did, so a reader there goes on here, as the log would.
                    start = last
                self._last[stream] = end
                if events is None or self._held + len(events) > self.max_events:
                    continue
                self._chunks.setdefault(stream, deque()).append(_Chunk(start, end, events))
                self._held += len(events)

    def take(self, stream: str, offset: Offset) -> Batch | None:
        """The batch of the hand-offs that continue ``offset`` without a gap; an empty
        one when ``offset`` is where ``/ingest`` last wrote (the reader's check of a
        hinted stream, 3,000 a second on a host of 3,000 live runs, costs no read); None
        when the log must be read."""
        with self._lock:
            chunks = self._chunks.get(stream)
            events: list[Event] = []
            end = offset
            while chunks and _at_or_before(chunks[0].end, offset):
                self._held -= len(chunks.popleft().events)  # stale: read already
            while chunks and chunks[0].start == end:
                chunk = chunks.popleft()
                events += chunk.events
                end = chunk.end
                self._held -= len(chunk.events)
            if chunks is not None and not chunks:
                del self._chunks[stream]
            written = self._last.get(stream)
            if events or written == offset:
                # Drained when nothing was written after it; else the reader comes back.
                return Batch(stream, events, end, drained=written == end)
            return None

    def forget(self, stream: str) -> None:
        """Drop what waits for ``stream`` (its writer closed: a local producer may take it)."""
        with self._lock:
            self._last.pop(stream, None)
            chunks = self._chunks.pop(stream, None)
            if chunks:
                self._held -= sum(len(chunk.events) for chunk in chunks)


class HandoffReader(LogReader):
    """A ``LogReader`` that serves a read from the hand-offs when they continue its
    offset, and reads the log otherwise."""

    def __init__(self, *args: object, handoff: Handoff, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.handoff = handoff

    def read(self, stream: str, offset: Offset = _START) -> Batch:
        batch = self.handoff.take(stream, offset)
        return batch if batch is not None else super().read(stream, offset)


def _at_or_before(end: Offset, offset: Offset) -> bool:
    return (end.segment, end.position) <= (offset.segment, offset.position)

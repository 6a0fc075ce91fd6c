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
that is not finite, a failed sync; dropped: see Memory; cleared when the writer
restarted), stale (behind the offset) or not contiguous is no error: that read goes to
the log. A part that starts a new segment continues the part before it (the writer
rolled over after it: nothing else writes a stream while ``/ingest`` holds it). So a
lost hand-off delays an event by one read at most, never loses or doubles it.

Memory: at most ``MAX_BYTES`` of lines wait as parsed events (about five times that in
memory for small metrics events). Past it, and once a stream's oldest hand-off waited
``STALE_S`` (a stream the writer does not read: quarantined, or the writer stopped), the
streams waiting longest are dropped; a restarted writer (``follow`` again) clears them
all, since it starts from its committed offsets, behind them. A read takes at most the
reader's ``batch_bytes`` of hand-offs (at least one), as a read of the log would.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from waddle.event_types import Event
from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL, Batch, LogReader, Offset

# Bytes of lines held for the writer at most; beyond it, the oldest streams' are dropped.
MAX_BYTES = 16 << 20
# Seconds a stream's oldest hand-off waits at most before its stream's are dropped.
STALE_S = 30.0
_START = Offset()


# One part written by ``IngestLog``: stream, offsets before and after it, its events
# (None: not handed off).
Given = tuple[str, Offset, Offset, Sequence[Event] | None]


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: Offset
    end: Offset
    events: Sequence[Event]
    size: int  # bytes of its lines in the log
    given: float  # when, by ``clock``


class Handoff:
    """Parts written by ``IngestLog``, per stream in log order, until the writer takes them."""

    def __init__(
        self,
        max_bytes: int = MAX_BYTES,
        stale_after: float = STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.stale_after = stale_after
        self.clock = clock
        # Streams in the order they last began to wait (given while none waited, or taken
        # from with some left): the front ones are dropped first.
        self._chunks: OrderedDict[str, deque[_Chunk]] = OrderedDict()
        self._last: dict[str, Offset] = {}  # per stream: the end of the last part written
        self._held = 0  # bytes
        self._lock = threading.Lock()

    def give(self, parts: Sequence[Given]) -> None:
        """For each part, ``events`` were written (and synced) from ``start`` to ``end`` of
        ``stream``'s log; ``None``: lines were written there that are not handed off (read
        the log). A request's parts in one call: one taking of the lock."""
        with self._lock:
            now = self.clock()
            for stream, start, end, events in parts:
                size = end.position - start.position
                last = self._last.get(stream)
                if last is not None and start.position == 0 and start.seq == last.seq:
                    # The writer rolled over to a new segment: the one before ends where
                    # the last part did, so a reader there goes on here, as the log would.
                    start = last
                self._last[stream] = end
                if events is None or size > self.max_bytes:
                    continue
                self._make_room(size, now)
                chunks = self._chunks.get(stream)
                if chunks is None:
                    chunks = self._chunks[stream] = deque()
                chunks.append(_Chunk(start, end, events, size, now))
                self._held += size

    def _make_room(self, size: int, now: float) -> None:
        """Drop the streams waiting longest while ``size`` more bytes would not fit, or
        while the front one's oldest hand-off is stale."""
        while self._chunks:
            stream, chunks = next(iter(self._chunks.items()))
            if self._held + size <= self.max_bytes and now - chunks[0].given < self.stale_after:
                return
            del self._chunks[stream]
            self._held -= sum(chunk.size for chunk in chunks)

    def take(self, stream: str, offset: Offset, max_bytes: int | None = None) -> Batch | None:
        """The batch of the hand-offs that continue ``offset`` without a gap, up to
        ``max_bytes`` of lines (at least one hand-off); an empty one when ``offset`` is
        where ``/ingest`` last wrote (the reader's check of a hinted stream, 3,000 a second
        on a host of 3,000 live runs, costs no read); None when the log must be read."""
        with self._lock:
            chunks = self._chunks.get(stream)
            events: list[Event] = []
            end = offset
            taken = 0
            while chunks and _at_or_before(chunks[0].end, offset):
                self._held -= chunks.popleft().size  # stale: read already
            while chunks and chunks[0].start == end:
                if events and max_bytes is not None and taken + chunks[0].size > max_bytes:
                    break
                chunk = chunks.popleft()
                events += chunk.events
                end = chunk.end
                taken += chunk.size
            self._held -= taken
            if chunks is not None:
                if chunks:
                    self._chunks.move_to_end(stream)  # read: it waits from now on
                else:
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
                self._held -= sum(chunk.size for chunk in chunks)

    def clear(self) -> None:
        """Drop every hand-off waiting (the writer restarted: it reads from its committed
        offsets, behind them); what ``/ingest`` last wrote is kept."""
        with self._lock:
            self._chunks.clear()
            self._held = 0


class HandoffReader(LogReader):
    """A ``LogReader`` that serves a read from the hand-offs when they continue its
    offset, and reads the log otherwise."""

    def __init__(self, *args: object, handoff: Handoff, **options: object) -> None:
        super().__init__(*args, **options)  # type: ignore[arg-type]
        self.handoff = handoff

    def read(self, stream: str, offset: Offset = _START) -> Batch:
        batch = self.handoff.take(stream, offset, self.batch_bytes)
        return batch if batch is not None else super().read(stream, offset)

    def follow(
        self,
        offsets: Mapping[str, Offset],
        stop: threading.Event,
        interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Iterator[list[Batch]]:
        """``LogReader.follow``, from no hand-offs: each start of the writer (a restart
        after a failure included) lets go of those given while it was not reading."""
        self.handoff.clear()
        return super().follow(offsets, stop, interval)


def _at_or_before(end: Offset, offset: Offset) -> bool:
    return (end.segment, end.position) <= (offset.segment, offset.position)

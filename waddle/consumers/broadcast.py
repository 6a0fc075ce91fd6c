"""The live broadcaster: tails the log and pushes new events to subscribed clients.

``Broadcaster`` is a consumer (``waddle.consumers.base``) driven by the one tail loop; it
turns each batch into ready-encoded ``Chunk`` messages and hands them to a ``Hub`` on the
server's event loop. The ``Hub`` offers every chunk to every ``Subscriber`` whose
subscription matches; the WebSocket endpoint (``waddle.web.ws``) drains a subscriber.

Delivery to one client: every event of a subscribed stream after the client's starting
point, at most once, in seq order per stream (no order across streams). The starting
point is "now" for a plain subscription, or after ``since[stream]`` when given: the
missed events are read from the log first, then live ones follow, with nothing missed
or doubled between the two (the kdb+ tick handshake: live events are queued from the
moment of subscribing, and those the log replay already delivered are skipped).

Backpressure: none reaches the tail. Offering a chunk never blocks and never waits on a
client. A client whose queue would exceed ``limit`` events has its queue coalesced into
a pointer: the queued events are dropped from memory and read again from the log when
the client catches up, so a slow client costs bounded memory and still misses nothing.
(A client that stops reading altogether is disconnected by the endpoint's send timeout.)
While no client is connected the tail reads, lists and checks nothing
(``IdleSkippingReader``): the first client to ``join`` the hub waits until the tail has
moved every stream's offset to its end (``Hub.arm``), so it gets every event that
arrives after it joined, and nobody is sent what arrived while nobody listened.
The broadcaster is not durable: it starts at the end of the log and keeps no offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from waddle.consumers.base import Consumer, Offsets
from waddle.event_types import Event
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.record import encode_accepted
from waddle.eventlog.segment import list_segments, segment_name
from waddle.ids import run_id_of_stream

if TYPE_CHECKING:
    from waddle.eventlog.parking import Parking

MAX_CHUNK_EVENTS = 1000
MAX_CHUNK_BYTES = 512 * 1024
DEFAULT_QUEUE_EVENTS = 50_000
_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a subscription matches a stream on (from its ``run`` event)."""

    run_id: str
    project: str | None

    @classmethod
    def of_id(cls, stream: str) -> StreamInfo:
        """What the stream id alone tells: its run (``<run>.<rank>``), no project."""
        return cls(run_id_of_stream(stream), None)


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive events of one stream, with their message already encoded."""

    stream: str
    info: StreamInfo
    events: list[Event]
    text: str

    @property
    def first(self) -> int:
        seq: int = self.events[0]["seq"]
        return seq

    @property
    def last(self) -> int:
        seq: int = self.events[-1]["seq"]
        return seq


def message(stream: str, info: StreamInfo, events: list[Event]) -> str:
    """The ``events`` message of the WebSocket protocol (NaN spelled as in the log)."""
    body = {"type": "events", "stream": stream, "run_id": info.run_id, "events": events}
    return encode_accepted(body)[:-1].decode()


def chunks(stream: str, info: StreamInfo, events: list[Event]) -> list[Chunk]:
    """``events`` cut into messages of at most ``MAX_CHUNK_EVENTS`` and about 512 KiB."""
    out: list[Chunk] = []
    pending = [events[i : i + MAX_CHUNK_EVENTS] for i in range(0, len(events), MAX_CHUNK_EVENTS)]
    while pending:
        part = pending.pop(0)
        text = message(stream, info, part)
        if len(text) > MAX_CHUNK_BYTES and len(part) > 1:
            half = len(part) // 2
            pending[:0] = [part[:half], part[half:]]
            continue
        out.append(Chunk(stream, info, part, text))
    return out


@dataclass
class Subscription:
    """What a client follows: whole projects and single runs."""

    projects: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)

    def matches(self, info: StreamInfo) -> bool:
        return info.run_id in self.runs or (
            info.project is not None and info.project in self.projects
        )


class Subscriber:
    """One client's bounded queue, what it was sent, and what it must replay from the log.

    Only the event loop's thread touches a subscriber.
    """

    def __init__(self, limit: int = DEFAULT_QUEUE_EVENTS) -> None:
        self.limit = limit
        self.subscription = Subscription()
        self.queue: deque[Chunk] = deque()
        self.pending = 0
        self.delivered: dict[str, int] = {}
        self.replay: dict[str, int] = {}
        self.coalesced = 0
        self.wake = asyncio.Event()

    def offer(self, chunk: Chunk) -> None:
        """Queue ``chunk`` if subscribed; past the limit, coalesce into a replay."""
        if not self.subscription.matches(chunk.info):
            return
        if chunk.last <= self.delivered.get(chunk.stream, -1):
            return
        self.queue.append(chunk)
        self.pending += len(chunk.events)
        if self.pending > self.limit:
            self._coalesce()
        self.wake.set()

    def _coalesce(self) -> None:
        for chunk in self.queue:
            start = self.delivered.get(chunk.stream, chunk.first - 1)
            self.replay.setdefault(chunk.stream, start)
        self.queue.clear()
        self.pending = 0
        self.coalesced += 1

    def take(self) -> Chunk | None:
        """The next live chunk, trimmed to what was not delivered yet; None when empty.

        Chunks of a stream still being replayed are skipped: the replay reads them.
        """
        while self.queue:
            chunk = self.queue.popleft()
            self.pending -= len(chunk.events)
            if chunk.stream in self.replay:
                continue
            done = self.delivered.get(chunk.stream, -1)
            if chunk.last <= done:
                continue
            if chunk.first <= done:
                rest = [event for event in chunk.events if event["seq"] > done]
                chunk = Chunk(
                    chunk.stream, chunk.info, rest, message(chunk.stream, chunk.info, rest)
                )
            return chunk
        return None

    def sent(self, stream: str, last_seq: int) -> None:
        """Record delivery up to ``last_seq``; a pending replay starts after it."""
        self.delivered[stream] = max(last_seq, self.delivered.get(stream, -1))
        if self.replay.get(stream, last_seq) < last_seq:
            self.replay[stream] = last_seq


class Hub:
    """The subscribers of one event loop; ``publish`` is safe to call from any thread.

    ``armed``: the tail reads for the subscribers (its offsets were at each stream's end
    when it was armed, or later). While no subscriber is connected the tail disarms and
    reads nothing; a subscriber that ``join``s a disarmed hub waits for the tail to arm
    it again, so nothing that arrives after it joined is skipped.
    """

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.armed = False
        self._waiting: list[asyncio.Future[None]] = []
        self._on_join: list[Callable[[], None]] = []  # wake tails waiting for a client

    def on_join(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever a subscriber joins a disarmed hub (a tail that reads
        nothing while no client is connected waits for it)."""
        self._on_join.append(wake)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def detach(self) -> None:
        self._loop = None
        self.arm()  # nobody waits for a tail that no longer runs

    async def join(self, subscriber: Subscriber) -> None:
        """Add ``subscriber``; returns once the tail reads for it (at once if armed)."""
        with self._lock:
            self.subscribers.add(subscriber)
            if self.armed:
                return
            waiting = asyncio.get_running_loop().create_future()
            self._waiting.append(waiting)
        for wake in self._on_join:
            wake()
        try:
            await waiting
        except asyncio.CancelledError:
            self.subscribers.discard(subscriber)
            raise

    def idle(self) -> bool:
        """Whether no subscriber is connected; if so the hub is disarmed (tail thread)."""
        with self._lock:
            if not self.subscribers:
                self.armed = False
            return not self.subscribers

    def arm(self) -> None:
        """The tail's offsets are at each stream's end now: release the waiting joins."""
        with self._lock:
            self.armed = True
            waiting, self._waiting = self._waiting, []
        for future in waiting:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                future.get_loop().call_soon_threadsafe(_release, future)

    def publish(self, items: list[Chunk]) -> None:
        loop = self._loop
        if loop is None or not items:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while the tail ran
            loop.call_soon_threadsafe(self._offer, items)

    def _offer(self, items: list[Chunk]) -> None:
        for subscriber in self.subscribers:
            for chunk in items:
                subscriber.offer(chunk)


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StreamDirectory:
    """Stream id to ``StreamInfo``, from ``run`` events seen or read from the log.

    It holds streams of the log only, so its size is bounded by the log, whatever ids
    clients name.
    """

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        self._known: dict[str, StreamInfo] = {}

    def __len__(self) -> int:
        return len(self._known)

    def learn(self, stream: str, events: Iterable[Event]) -> None:
        for event in events:
            if event["type"] == "run":
                self._known[stream] = StreamInfo(event["run_id"], event["project"])

    def learn_run(self, stream: str, events: list[Event]) -> None:
        """``learn`` for a batch that is not broadcast: only a known stream can go stale.

        An unknown stream is read from the log when first asked about; a known one is
        updated only by a later ``run`` event (a resume), which skipping would lose.
        """
        if stream in self._known:
            self.learn(stream, events)

    def lookup(self, stream: str) -> StreamInfo | None:
        """None for a stream the log does not hold (and nothing is remembered of it).

        Blocking (may read the stream's first events): call off the event loop.
        """
        known = self._known.get(stream)
        if known is None:
            segments = list_segments(self.reader.log_dir / stream)
            if not segments:
                return None
            self.learn(stream, self.reader.read(stream, Offset(segments[0])).events[:1])
            known = self._known.setdefault(stream, StreamInfo.of_id(stream))
        return known

    def info(self, stream: str) -> StreamInfo:
        """``lookup``, or what the id alone tells for a stream not in the log (yet)."""
        return self.lookup(stream) or StreamInfo.of_id(stream)


class IdleSkippingReader(LogReader):
    """The broadcaster's tail: while no client is connected it reads, lists and checks
    nothing (a host tails thousands of growing streams for nobody most of the time).

    Its first round reads every stream as any tail does, so that ``follow`` parks the
    finished ones. When a client has joined the hub since, the next ``poll`` moves every
    stream's offset to its end (a parked stream's only if it changed), found after the
    client joined, and only then arms the hub: the client is not sent what arrived
    before it, and misses nothing after.
    """

    def __init__(self, root: Path | str, hub: Hub) -> None:
        super().__init__(root)
        self.hub = hub
        hub.on_join(self.wake)
        self.settled = False

    def _quiet(self, parking: Parking) -> bool:
        # With no client it reads nothing until one joins, and a join wakes it.
        return (self.settled and self.hub.idle()) or super()._quiet(parking)

    def poll(self, offsets: Mapping[str, Offset]) -> list[Batch]:
        idle = self.hub.idle()
        if not self.settled:
            batches = super().poll(offsets)
            self.settled = True
            return batches
        if idle:
            return []
        if self.hub.armed:
            return super().poll(offsets)
        batches = []
        parking = self._parking
        for stream in self.streams():
            if parking is not None and parking.unchanged(stream):
                continue
            offset = offsets.get(stream, Offset())
            end = end_offset(self.log_dir / stream)
            if (end.segment, end.position) > (offset.segment, offset.position):
                batches.append(Batch(stream, [], Offset(end.segment, end.position, offset.seq)))
        self.hub.arm()
        return batches


class Broadcaster(Consumer):
    """The live broadcaster consumer: batches in, encoded chunks out to the hub.

    ``reader`` reads the log for replays; ``tail_reader`` is the one to drive it with.
    """

    name = "broadcast"
    durable = False

    def __init__(self, root: Path | str, hub: Hub | None = None) -> None:
        self.reader = LogReader(root)
        self.hub = hub or Hub()
        self.tail_reader = IdleSkippingReader(root, self.hub)
        self.directory = StreamDirectory(self.reader)

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Start at the current end of every stream: only new events are broadcast."""
        ends = {
            stream: end_offset(self.reader.log_dir / stream) for stream in self.reader.streams()
        }
        self.hub.arm()
        return super().start(ends)

    def handle(self, batches: list[Batch]) -> None:
        # The last client left during the round: nobody can miss these events (a client
        # that joins later waits for the tail to skip to the end, and replays from the
        # log). Only the offsets and the stream directory are kept up.
        idle = not self.hub.subscribers
        out: list[Chunk] = []
        for batch in batches:
            events = self.fresh(batch)
            if idle:
                self.directory.learn_run(batch.stream, events)
            elif events:
                self.directory.learn(batch.stream, events)
                out += chunks(batch.stream, self.directory.info(batch.stream), events)
        self.hub.publish(out)

    def commit(self) -> Offsets:
        return dict(self.taken)


def end_offset(stream_dir: Path) -> Offset:
    """The offset just after the last complete line of a stream's active segment."""
    segments = list_segments(stream_dir)
    if not segments:
        return Offset()
    path = stream_dir / segment_name(segments[-1])
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            at = end
            while at > 0:
                start = max(0, at - _TAIL_BLOCK)
                handle.seek(start)
                newline = handle.read(at - start).rfind(b"\n")
                if newline >= 0:
                    return Offset(segments[-1], start + newline + 1, -1)
                at = start
    except FileNotFoundError:
        pass
    return Offset(segments[-1], 0, -1)


def locate(reader: LogReader, stream: str, after: int) -> Offset:
    """Where to read ``stream`` from to get the events after seq ``after``."""
    segments = list_segments(reader.log_dir / stream)
    start = [first for first in segments if first <= after + 1]
    return Offset(start[-1] if start else (segments[0] if segments else 0), 0, after)


def read_after(reader: LogReader, stream: str, offset: Offset, rounds: int = 64) -> Batch:
    """The next non-empty batch after ``offset``, or an empty one at the end of the log.

    ``LogReader.read`` may return an empty batch that moved forward (events at or below
    the offset's seq were skipped); this keeps reading, a bounded number of times.
    """
    batch = reader.read(stream, offset)
    for _ in range(rounds):
        if batch.events or batch.offset == offset:
            break
        offset = batch.offset
        batch = reader.read(stream, offset)
    return batch

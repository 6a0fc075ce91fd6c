"""What an ingester holds of each stream it takes from JetStream, and how it takes them.

Per stream: the highest seq its log holds (``IngestLog``), the windows kept past a gap
(``waddle.consumers.nats.windows``), and whether the seqs before them were read from the
broker already (a stream that moved here mid-way). ``Streams.take`` appends what follows
the log's last seq and acknowledges it; the caller (``waddle.web.nats_ingest``) pulls the
messages and says which partitions it gave up (``forget``).

Delivery: a window is acknowledged only after its events are in the log and fsynced;
what the log holds already is acknowledged without being written again. Memory: at most
``hold`` windows kept per stream, and ``hold_bytes`` of payload kept over all streams
(past either, the windows furthest from their stream's gap are handed back, to come
round again after ``NAK_CAP_S``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import orjson

from waddle.consumers.nats.broker import DEFAULT_ACK_WAIT_S, partition
from waddle.consumers.nats.windows import FIRST, Window, backfill, chain
from waddle.errors import IngestClosed, IngestError, StreamConflict, StreamLockedError
from waddle.event_types import Event
from waddle.web.errors import RequestError
from waddle.web.ingest import check_events
from waddle.web.ingest_log import IngestLog

logger = logging.getLogger("waddle.nats")

# A message handed back (past the hold, or refused by the log) comes round after this.
NAK_CAP_S = 5.0
# A message kept past a gap is reported in progress this often (well under ack_wait).
IN_PROGRESS_EVERY_S = 2.0
# A stream kept waiting at a gap this many ack_waits is reported (once per gap): by then
# no redelivery is bringing the seq it waits for.
STALL_ACK_WAITS = 3
# The most messages (windows) of one stream kept past its gap; later ones are handed back,
# so that a stream that waits cannot take every slot of the consumer's max_ack_pending,
# nor more than about 64 MiB of memory.
DEFAULT_HOLD = 512
# The most bytes of payload kept past gaps over all streams: after a takeover every moved
# stream may wait (for its backfill), and at 512 windows each 100 of them held 6.4 GiB.
DEFAULT_HOLD_BYTES = 256 << 20


class Streams:
    """The streams one ingester takes into ``log`` (see the module's docstring)."""

    def __init__(
        self,
        log: IngestLog,
        *,
        name: str,
        fetch: int,
        hold: int = DEFAULT_HOLD,
        hold_bytes: int = DEFAULT_HOLD_BYTES,
        ack_wait: float = DEFAULT_ACK_WAIT_S,
    ) -> None:
        self.log = log
        self.name = name
        self.fetch = fetch
        self.hold = max(1, hold)
        self.hold_bytes = hold_bytes
        self.ack_wait = ack_wait  # the consumers', set by the ingester on connecting
        self.client: Any = None  # the ingester's connection, for backfills
        self.taken = 0  # events written into the log (not counting duplicates)
        self._held: dict[str, int] = {}
        self._waiting: dict[str, list[Window]] = defaultdict(list)
        self._sizes: dict[str, int] = {}  # bytes of the windows kept, per stream kept at a gap
        self._backfilled: dict[str, int] = {}  # per stream, the seq a backfill looked for
        self._touched = 0.0
        self._fresh: set[int] = set()  # ids of the messages kept at the last touch
        # Per stream kept at a gap: the seq it waits for, since when, whether reported.
        self._stalls: dict[str, tuple[int, float, bool]] = {}

    def reset(self) -> None:
        """Forget the windows kept: their acks went with a connection that was lost."""
        self._waiting.clear()
        self._sizes.clear()
        self._stalls.clear()

    async def forget(self, lost: set[int], partitions: int) -> None:
        """Hand back what is kept of the streams of the partitions ``lost`` (given up),
        for their new holder."""
        for stream in [s for s in self._waiting if partition(s, partitions) in lost]:
            await _answer(self._waiting.pop(stream), "nak")
            self._sizes.pop(stream, None)
            self._stalls.pop(stream, None)
            self._backfilled.pop(stream, None)

    async def take(self, stream: str, items: list[tuple[int, Any]]) -> None:
        """Append what follows the log's last seq from the messages ``items`` (each a
        window from its first seq); ack those and repeats; keep the rest, within
        ``hold_bytes`` over all streams."""
        await self._take(stream, items)
        await self._within_bytes(stream)

    async def _within_bytes(self, stream: str) -> None:
        """Note the bytes ``stream`` keeps; past ``hold_bytes`` over all streams, hand
        back its windows furthest from its gap (the ones it needs last) until under."""
        waiting = self._waiting.get(stream, [])
        size = sum(window.size for window in waiting)
        excess = sum(self._sizes.values()) - self._sizes.get(stream, 0) + size - self.hold_bytes
        if excess > 0:
            waiting.sort(key=FIRST)
            keep = len(waiting)
            while keep and excess > 0 and waiting[keep - 1].msg is not None:
                keep -= 1
                excess -= waiting[keep].size
                size -= waiting[keep].size
            await _answer(waiting[keep:], "nak", delay=NAK_CAP_S)
            del waiting[keep:]
        if size:
            self._sizes[stream] = size
        else:
            self._sizes.pop(stream, None)

    async def _take(self, stream: str, items: list[tuple[int, Any]]) -> None:
        waiting = self._waiting[stream]
        held = self._held.get(stream)
        if held is None:
            try:
                held = self._held[stream] = await asyncio.to_thread(self.log.held, stream)
            except IngestClosed:
                raise
            except (IngestError, StreamLockedError) as exc:
                await self._refuse(stream, exc, [msg for _, msg in items])
                return
        for first, msg in items:
            window = Window.of(first, msg, msg.data)
            if window.last <= held:
                await msg.ack()  # a repeat of what the log holds
            else:
                waiting.append(window)
        if len(waiting) > self.hold:
            waiting.sort(key=FIRST)
            await _answer(waiting[self.hold :], "nak", delay=NAK_CAP_S)
            del waiting[self.hold :]
        run, lines = chain(waiting, held)
        if not lines and waiting and self._backfilled.get(stream) != held + 1:
            await self._backfill(stream, waiting, held)
            run, lines = chain(waiting, held)
        if not lines:
            await _answer(run, "ack")
            self._note_stall(stream, held + 1)
            return
        try:
            events = self._events(stream, held + 1, lines)
            outcome = await asyncio.to_thread(self.log.append, stream, events, lines)
        except IngestClosed:
            raise
        except (IngestError, StreamLockedError) as exc:
            await self._refuse(stream, exc, [window.msg for window in run])
            return
        self._held[stream] = outcome.seq
        self.taken += outcome.written
        await _answer(run, "ack")
        self._note_stall(stream, outcome.seq + 1)

    async def _backfill(self, stream: str, waiting: list[Window], held: int) -> None:
        """Read the seqs ``stream`` lacks before its first waiting window from the broker
        (it moved here mid-way, or a redelivery is slow): once per seq awaited."""
        self._backfilled[stream] = held + 1
        subjects = [w.msg.subject for w in waiting if w.msg is not None]
        if not subjects:
            return  # only what an earlier backfill brought waits: nothing to look up
        upto = min(window.first for window in waiting)
        found, reached = await backfill(self.client, stream, subjects[0], held, upto, self.fetch)
        waiting += found
        if reached < upto:
            logger.error(
                "waddle ingester %s: stream %r stops at seq %d: the broker no longer holds "
                "seqs %d to %d (retention dropped them) and this ingester's log lacks them. "
                "To continue it here, publish the stream again from its start (on its "
                "relay's machine: `waddle consumers rm relay-nats-HOST-PORT`, then `waddle "
                "sync nats://...`)",
                self.name,
                stream,
                reached,
                reached,
                upto - 1,
            )

    def _note_stall(self, stream: str, awaited: int) -> None:
        """Report once a stream kept waiting for seq ``awaited`` past ``STALL_ACK_WAITS``
        ack_waits: a seq the broker lacks (a relay that published a gap, a message lost
        with the broker's store), which no redelivery fills; the stream stops there."""
        if not self._waiting.get(stream):
            self._stalls.pop(stream, None)
            return
        now = time.monotonic()
        seen, since, told = self._stalls.get(stream, (-1, now, False))
        if seen != awaited:
            self._stalls[stream] = (awaited, now, False)
        elif not told and now - since >= STALL_ACK_WAITS * self.ack_wait:
            self._stalls[stream] = (awaited, since, True)
            logger.warning(
                "waddle ingester %s: stream %r has waited for seq %d for over %.0f s while "
                "%d later messages are kept; the broker does not seem to hold it, so the "
                "stream stops there (its relay's log may have lost it)",
                self.name,
                stream,
                awaited,
                now - since,
                len(self._waiting[stream]),
            )

    def _events(self, stream: str, first: int, lines: list[bytes]) -> list[Event]:
        """The events of ``lines`` (seqs from ``first`` on), checked as ``/ingest`` checks
        them."""
        try:
            events = check_events(stream, [(i + 1, orjson.loads(x)) for i, x in enumerate(lines)])
        except (orjson.JSONDecodeError, RequestError) as exc:
            reason = f"the broker holds an event this host refuses: {exc}"
            raise IngestError(reason, stream=stream) from exc
        if events[0]["seq"] != first:
            reason = f"a message's events start at seq {events[0]['seq']}, its id says {first}"
            raise IngestError(reason, stream=stream)
        return events

    async def _refuse(
        self, stream: str, exc: IngestError | StreamLockedError, msgs: list[Any]
    ) -> None:
        """The log cannot take the stream now: say why, hand the messages back for later
        (and read from the broker again what a backfill had brought: it went with them)."""
        self._backfilled.pop(stream, None)
        level = logging.ERROR if isinstance(exc, StreamConflict) else logging.WARNING
        logger.log(
            level, "waddle ingester %s: stream %r: %s; retried later", self.name, stream, exc
        )
        for msg in msgs:
            if msg is not None:
                await msg.nak(delay=NAK_CAP_S)

    async def keep_alive(self) -> None:
        """Tell the broker the messages kept past a gap are in progress (no redelivery)."""
        now = time.monotonic()
        if now - self._touched < IN_PROGRESS_EVERY_S:
            return
        self._touched = now
        for stream, waiting in self._waiting.items():
            if waiting:
                self._note_stall(stream, self._held[stream] + 1)
            for window in waiting:
                if window.msg is not None and id(window.msg) not in self._fresh:
                    await window.msg.in_progress()  # kept since the last round of these
        self._fresh = {id(w.msg) for waiting in self._waiting.values() for w in waiting}


async def _answer(windows: list[Window], how: str, **options: float) -> None:
    """Ack or nak the messages of ``windows`` (a backfilled one has none)."""
    for window in windows:
        if window.msg is not None:
            await getattr(window.msg, how)(**options)

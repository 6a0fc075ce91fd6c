"""``waddle serve --from nats://HOST:PORT``: an ingester that takes events from JetStream.

Several ingesters (on one machine or many) pull from the one durable consumer that
``waddle nats setup`` creates, so each message is delivered to one of them at a time,
and each appends what it takes into its own log through ``IngestLog`` (as ``/ingest``
does); the server's usual consumers (the DuckDB writer, the live feed) take it from there.

Ownership: a stream's events must all land in one log, in seq order, so the first
ingester that meets a stream claims it in the broker's ``waddle-owners`` bucket (an
atomic create: one claim wins) under its ``name``, and keeps it across restarts (the
name is stable: host and folder by default). A message for a stream another ingester
owns is handed back (nak, with a delay that grows with each delivery), so the broker
redelivers it until its owner takes it. A run's streams (one per rank) may be owned by
different ingesters; the lake joins them again.

Delivery: exactly-once in the owner's log. A message (a window of a stream's events
from the seq its id names) is acknowledged only after its events are in the log and
fsynced (``IngestLog.append``); what the log holds already (a redelivery after a crash,
a window a relay published again with other boundaries) is not written again.
Ordering: messages of one stream may arrive out of order (a redelivery, a message
handed back by another ingester); the owner keeps those past a gap unacknowledged in
memory (telling the broker they are in progress) and appends them once the gap fills.
Memory is bounded by the consumer's ``max_ack_pending``. While the owner of a stream is
down, that stream waits in the broker (its messages are handed back and forth among the
others, with growing delays); the other streams go on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from waddle.consumers.nats.broker import (
    CONSUMER,
    DEFAULT_ACK_WAIT_S,
    MSG_ID,
    OWNERS,
    STREAM,
    Puller,
    PullRefused,
    back_off,
    check_nats_url,
    connect,
    parse_msg_id,
    unpack,
)
from waddle.consumers.relay.client import Backoff
from waddle.errors import IngestClosed, IngestError, StreamConflict, StreamLockedError
from waddle.event_types import Event
from waddle.web.errors import RequestError
from waddle.web.ingest import check_events
from waddle.web.ingest_log import IngestLog
from waddle.web.settings import Settings

logger = logging.getLogger("waddle.nats")

# Messages asked for at once: each is a window of up to 128 KiB (the relay's limit).
DEFAULT_FETCH = 256
# While messages flow a round takes what the server holds now; when it held nothing, the
# next request waits up to this long for more (one request per wait while idle).
FETCH_BUSY_S = 0.0
FETCH_IDLE_S = 0.5
# Handing a message back: redelivered soon while its owner is likely up and merely did
# not pull it, then slower (its owner may be down).
NAK_BASE_S = 0.01
NAK_QUICK_DELIVERIES = 10
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


@dataclass(slots=True)
class Window:
    """One message: a window of a stream's consecutive events from seq ``first``."""

    first: int
    msg: Any
    lines: list[bytes]

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1


FIRST = attrgetter("first")


def chain(waiting: list[Window], held: int) -> tuple[list[Window], list[bytes]]:
    """Take from ``waiting`` the windows that start at or before the seq after ``held``,
    in order: those windows, and the lines of the seqs they add past ``held`` (a window
    re-published with other boundaries overlaps another; each seq is taken once)."""
    waiting.sort(key=FIRST)
    after = held + 1
    lines: list[bytes] = []
    count = 0
    for window in waiting:
        if window.first > after:
            break
        count += 1
        if window.last >= after:
            lines += window.lines[after - window.first :]
            after = window.last + 1
    run = waiting[:count]
    del waiting[:count]
    return run, lines


def default_name(root: Path) -> str:
    """An ingester's stable name: this host and its folder."""
    return f"{socket.gethostname()}:{root.resolve()}"


def owner_key(stream: str) -> str:
    """The bucket key of a stream: its id, or its hex when the id is no valid key."""
    if stream.endswith(".") or ".." in stream:
        return "x" + stream.encode().hex()
    return stream


def nak_delay(deliveries: int) -> float:
    """How long a handed-back message waits before it is delivered again."""
    slower = max(deliveries - NAK_QUICK_DELIVERIES, 0)
    return min(NAK_CAP_S, NAK_BASE_S * 2.0 ** min(slower, 20))


class NatsIngester:
    """Pulls events from the shared durable consumer into ``log`` until stopped."""

    def __init__(
        self,
        log: IngestLog,
        url: str,
        *,
        name: str,
        fetch: int = DEFAULT_FETCH,
        backoff: Backoff | None = None,
        ack_wait: float = DEFAULT_ACK_WAIT_S,
        hold: int = DEFAULT_HOLD,
    ) -> None:
        self.log = log
        self.url = check_nats_url(url)
        self.name = name
        self.fetch = fetch
        self.backoff = backoff or Backoff()
        self.ack_wait = ack_wait  # the consumer's, read from the server on connecting
        self.hold = max(1, hold)
        self.taken = 0  # events written into the log (not counting duplicates)
        self._owners: dict[str, str] = {}
        self._held: dict[str, int] = {}
        self._waiting: dict[str, list[Window]] = defaultdict(list)
        self._touched = 0.0
        self._wait = FETCH_IDLE_S
        self._fresh: set[int] = set()  # ids of the messages kept at the last touch
        # Per stream kept at a gap: the seq it waits for, since when, whether reported.
        self._stalls: dict[str, tuple[int, float, bool]] = {}

    def run(self, stop: threading.Event) -> None:
        """Ingest until ``stop`` is set or the log closes (the server stops); broker
        outages are waited out with backoff. What was taken and not written stays
        unacknowledged: the broker delivers it again."""
        try:
            asyncio.run(self._main(stop))
        except IngestClosed:
            logger.info("waddle ingester %s: the log closed; stopping", self.name)

    async def _main(self, stop: threading.Event) -> None:
        import nats.errors

        client: Any = None
        attempt = 0
        try:
            while not stop.is_set():
                try:
                    if client is None or client.is_closed:
                        client = await connect(self.url, f"ingester {self.name}")
                        self._waiting.clear()  # their acks went with the old client
                        self._stalls.clear()
                    js = client.jetstream()
                    info = await js.consumer_info(STREAM, CONSUMER)
                    self.ack_wait = info.config.ack_wait or self.ack_wait
                    owners = await js.key_value(OWNERS)
                    puller = Puller(client)
                    while not stop.is_set():
                        await self._round(puller, owners)
                        attempt = 0
                except (nats.errors.Error, OSError, asyncio.TimeoutError, PullRefused) as exc:
                    await self._wait_out(exc, attempt, stop)
                    attempt += 1
        finally:
            if client is not None:
                await client.close()

    async def _wait_out(self, exc: BaseException, attempt: int, stop: threading.Event) -> None:
        if attempt == 0:
            logger.warning(
                "waddle ingester %s: %r from the NATS server %s; retrying with backoff "
                "(is it up, and was `waddle nats setup --url %s` run?)",
                self.name,
                exc,
                self.url,
                self.url,
            )
        await back_off(self.backoff, attempt, stop.is_set)

    async def _round(self, puller: Puller, owners: Any) -> None:
        """Fetch one batch and take it; keep messages waiting past a gap alive."""
        msgs = await puller.fetch(self.fetch, self._wait)
        self._wait = FETCH_BUSY_S if msgs else FETCH_IDLE_S
        by_stream: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for msg in msgs:
            found = parse_msg_id((msg.headers or {}).get(MSG_ID))
            if found is None:
                logger.error("waddle ingester: a message without %s on %s", MSG_ID, msg.subject)
                await msg.term()
                continue
            by_stream[found[0]].append((found[1], msg))
        for stream, items in by_stream.items():
            if await self._owns(owners, stream):
                await self._take(stream, items)
            else:
                for _, msg in items:
                    await msg.nak(delay=nak_delay(msg.metadata.num_delivered))
        await self._keep_waiting_alive()

    async def _owns(self, owners: Any, stream: str) -> bool:
        """Whether this ingester owns ``stream``; claims it when nobody does yet."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        owner = self._owners.get(stream)
        key = owner_key(stream)
        while owner is None:
            try:
                owner = (await owners.get(key)).value.decode()
            except KeyNotFoundError:
                try:
                    await owners.create(key, self.name.encode())
                    owner = self.name
                except KeyWrongLastSequenceError:
                    continue  # another ingester claimed it first: read whose it is
            self._owners[stream] = owner
        return owner == self.name

    async def _take(self, stream: str, items: list[tuple[int, Any]]) -> None:
        """Append what follows the log's last seq from the messages ``items`` (each a
        window from its first seq); ack those and repeats; keep the rest."""
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
            window = Window(first, msg, unpack(msg.data))
            if window.last <= held:
                await msg.ack()  # a repeat of what the log holds
            else:
                waiting.append(window)
        if len(waiting) > self.hold:
            waiting.sort(key=FIRST)
            for window in waiting[self.hold :]:
                await window.msg.nak(delay=NAK_CAP_S)
            del waiting[self.hold :]
        run, lines = chain(waiting, held)
        if not lines:
            for window in run:
                await window.msg.ack()
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
        for window in run:
            await window.msg.ack()
        self._note_stall(stream, outcome.seq + 1)

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
        """The log cannot take the stream now: say why, hand the messages back for later."""
        level = logging.ERROR if isinstance(exc, StreamConflict) else logging.WARNING
        logger.log(
            level, "waddle ingester %s: stream %r: %s; retried later", self.name, stream, exc
        )
        for msg in msgs:
            await msg.nak(delay=NAK_CAP_S)

    async def _keep_waiting_alive(self) -> None:
        """Tell the broker the messages kept past a gap are in progress (no redelivery)."""
        now = time.monotonic()
        if now - self._touched < IN_PROGRESS_EVERY_S:
            return
        self._touched = now
        for stream, waiting in self._waiting.items():
            if waiting:
                self._note_stall(stream, self._held[stream] + 1)
            for window in waiting:
                if id(window.msg) not in self._fresh:  # kept since the last round of these
                    await window.msg.in_progress()
        self._fresh = {id(w.msg) for waiting in self._waiting.values() for w in waiting}


def serve_from(settings: Settings, url: str, *, name: str | None = None) -> int:
    """``waddle serve --from URL``: the server, plus an ingester from JetStream into its log.

    The ingester writes through the app's own ``IngestLog``: a stream that ``/ingest``
    also receives has one writer, and the host's consumers are told (``Hints``) which
    streams it grew instead of polling them. It starts once the app has, and ends when
    the app closes that log. An ingester that fails (a bug, not an outage: those are
    waited out) stops the server with exit code 1, so that a supervisor restarts both
    instead of a server that no longer ingests."""
    from waddle.web.server import serve

    stop = threading.Event()
    failed = threading.Event()
    threads: list[threading.Thread] = []
    ingester_name = name or default_name(settings.root)

    def start(app: Any) -> None:
        ingester = NatsIngester(app.state.ingest_log, url, name=ingester_name)

        def work() -> None:
            try:
                ingester.run(stop)
            except BaseException:
                logger.exception("waddle ingester %s stopped; stopping the server", ingester.name)
                failed.set()

        thread = threading.Thread(target=work, name="waddle-nats-ingester", daemon=True)
        thread.start()
        threads.append(thread)

    try:
        code = serve(settings, stop=failed, started=start)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return code or (1 if failed.is_set() else 0)

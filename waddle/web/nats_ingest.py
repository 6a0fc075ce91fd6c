"""``waddle serve --from nats://HOST:PORT``: an ingester that takes events from JetStream.

Several ingesters (on one machine or many) share the stream's partitions: each leases
its share in the broker (``waddle.consumers.nats.leases``) and pulls only the durable
consumers of the partitions it holds, so every message reaches the one ingester that
appends its stream, the first time. Each appends what it takes into its server's own
log through the app's ``IngestLog`` (as ``/ingest`` does); the server's usual consumers
(the DuckDB writer, the live feed) take it from there. A run's streams (one per rank)
may be in different partitions, so on different ingesters; the lake joins them again.

Delivery: exactly-once in the log. A message (a window of a stream's events from the
seq its id names) is acknowledged only after its events are in the log and fsynced
(``IngestLog.append``); what the log holds already (a redelivery after a crash, a window
a relay published again with other boundaries) is not written again.
Ordering: windows of a stream past a gap (a redelivery still to come) wait
unacknowledged in memory (reported in progress to the broker) until the gap fills.

Moves: when a partition moves here (its holder died, or released it to even out the
shares), its live streams arrive from where the other ingester stopped. The first time
a stream waits at a gap for a seq, the missing seqs are read from the broker's stream
(``windows.backfill``: retention keeps them), so every ingester's copy of a stream is
gapless from seq 0. The ingester it moved from keeps the prefix it had written: an
unfinished copy (docs/nats.md says what that means for the read side). A stream whose
start retention dropped stays at its gap, with one error naming it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from waddle.consumers.nats.broker import (
    DEFAULT_ACK_WAIT_S,
    DEFAULT_LEASE_S,
    LEASES,
    MEMBERS,
    MSG_ID,
    STREAM,
    NotSetUp,
    Puller,
    PullRefused,
    back_off,
    check_nats_url,
    connect,
    consumer_name,
    parse_msg_id,
    partition,
    partitions_of,
    unpack,
)
from waddle.consumers.nats.leases import Leases
from waddle.consumers.nats.windows import Window, backfill, chain
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


def default_name(root: Path) -> str:
    """An ingester's stable name: this host and its folder."""
    return f"{socket.gethostname()}:{root.resolve()}"


class NatsIngester:
    """Pulls the partitions it leases into ``log`` until stopped."""

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
        self.ack_wait = ack_wait  # the consumers', read from the server on connecting
        self.hold = max(1, hold)
        self.taken = 0  # events written into the log (not counting duplicates)
        self.partitions = 1  # read from the stream on connecting
        self._client: Any = None
        self._pullers: dict[int, Puller] = {}
        self._moves: list[tuple[set[int], set[int]]] = []  # lease rounds not yet applied
        self._held: dict[str, int] = {}
        self._waiting: dict[str, list[Window]] = defaultdict(list)
        self._backfilled: dict[str, int] = {}  # per stream, the seq a backfill looked for
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

        attempt = 0
        leases: Leases | None = None
        try:
            while not stop.is_set():
                renewing: asyncio.Task[None] | None = None
                try:
                    leases = await self._connect(leases)
                    lease_s = await self._lease_s()
                    renewing = asyncio.create_task(self._renew(leases, lease_s))
                    while not stop.is_set():
                        if renewing.done():
                            renewing.result()  # an outage while renewing: raise it here
                        await self._round()
                        attempt = 0
                except (
                    nats.errors.Error,
                    OSError,
                    asyncio.TimeoutError,
                    PullRefused,
                    NotSetUp,
                ) as exc:
                    await self._wait_out(exc, attempt, stop)
                    attempt += 1
                finally:
                    if renewing is not None:
                        renewing.cancel()
        finally:
            await self._leave(leases)

    async def _connect(self, leases: Leases | None) -> Leases:
        """A connection (a new one after an outage), and the leases to renew over it."""
        if self._client is None or self._client.is_closed:
            self._client = await connect(self.url, f"ingester {self.name}")
            self._waiting.clear()  # their acks went with the old client
            self._stalls.clear()
            self._pullers.clear()
        js = self._client.jetstream()
        self.partitions = await partitions_of(js)
        info = await js.consumer_info(STREAM, consumer_name(0))
        self.ack_wait = info.config.ack_wait or self.ack_wait
        buckets = (await js.key_value(LEASES), await js.key_value(MEMBERS))
        if leases is None:
            leases = Leases(self.name, self.partitions, *buckets)
        leases.leases, leases.members = buckets
        self._pullers = {p: Puller(self._client, consumer_name(p)) for p in leases.held}
        self._moves.clear()  # the leases held are the pullers now
        return leases

    async def _lease_s(self) -> float:
        """The lease, as the bucket's ``max_age`` says (``waddle nats setup --lease``)."""
        info = await self._client.jetstream().stream_info(f"KV_{LEASES}")
        return float(info.config.max_age or DEFAULT_LEASE_S)

    async def _renew(self, leases: Leases, lease_s: float) -> None:
        """Renew, give up and take partitions every third of the lease (``Leases``)."""
        while True:
            self._moves.append(await leases.round())
            await asyncio.sleep(lease_s / 3)

    async def _leave(self, leases: Leases | None) -> None:
        """On a stop: give the partitions up at once (not one lease later) and close."""
        import nats.errors

        client, self._client = self._client, None
        if client is None:
            return
        if leases is not None and not client.is_closed:
            try:
                await asyncio.wait_for(leases.release_all(), 5.0)
            except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
                logger.info("waddle ingester %s: leases left to expire (%s)", self.name, exc)
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

    async def _round(self) -> None:
        """Fetch from every partition held and take it; keep messages past a gap alive."""
        await self._apply_moves()
        if not self._pullers:
            await asyncio.sleep(FETCH_IDLE_S)
            return
        pulled = await asyncio.gather(
            *(puller.fetch(self.fetch, self._wait) for puller in self._pullers.values())
        )
        await self._apply_moves()  # a lease lost meanwhile: what it brought goes back
        self._wait = FETCH_BUSY_S if any(pulled) else FETCH_IDLE_S
        by_stream: dict[str, list[tuple[int, Any]]] = defaultdict(list)
        for msg in (msg for msgs in pulled for msg in msgs):
            found = parse_msg_id((msg.headers or {}).get(MSG_ID))
            if found is None:
                logger.error("waddle ingester: a message without %s on %s", MSG_ID, msg.subject)
                await msg.term()
            elif partition(found[0], self.partitions) not in self._pullers:
                await msg.nak()
            else:
                by_stream[found[0]].append((found[1], msg))
        for stream, items in by_stream.items():
            await self._take(stream, items)
        await self._keep_waiting_alive()

    async def _apply_moves(self) -> None:
        """Pull the partitions taken, stop pulling those given up; hand back what this
        ingester kept of the latter's streams, for their new holder."""
        while self._moves:
            taken, lost = self._moves.pop(0)
            for where in lost:
                puller = self._pullers.pop(where, None)
                if puller is not None:
                    await puller.close()
                for stream in [s for s in self._waiting if partition(s, self.partitions) == where]:
                    for window in self._waiting.pop(stream):
                        if window.msg is not None:
                            await window.msg.nak()
                    self._stalls.pop(stream, None)
                    self._backfilled.pop(stream, None)
            for where in taken - self._pullers.keys():
                self._pullers[where] = Puller(self._client, consumer_name(where))

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
            waiting.sort(key=lambda window: window.first)
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
        found, reached = await backfill(self._client, stream, subjects[0], held, upto, self.fetch)
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
                if window.msg is not None and id(window.msg) not in self._fresh:
                    await window.msg.in_progress()  # kept since the last round of these
        self._fresh = {id(w.msg) for waiting in self._waiting.values() for w in waiting}


async def _answer(windows: list[Window], how: str, **options: float) -> None:
    """Ack or nak the messages of ``windows`` (a backfilled one has none)."""
    for window in windows:
        if window.msg is not None:
            await getattr(window.msg, how)(**options)


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

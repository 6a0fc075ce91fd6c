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
from collections import defaultdict
from pathlib import Path
from typing import Any

from waddle import signals
from waddle.consumers.nats.broker import (
    DEFAULT_ACK_WAIT_S,
    DEFAULT_LEASE_S,
    LEASES,
    MEMBERS,
    MSG_ID,
    STREAM,
    NotSetUp,
    check_nats_url,
    consumer_name,
    parse_msg_id,
    partition,
    partitions_of,
)
from waddle.consumers.nats.client import Puller, PullRefused, back_off, connect
from waddle.consumers.nats.leases import Leases
from waddle.consumers.relay.client import Backoff
from waddle.errors import IngestClosed
from waddle.web.ingest_log import IngestLog
from waddle.web.nats_streams import DEFAULT_HOLD, Streams
from waddle.web.settings import Settings

logger = logging.getLogger("waddle.nats")

# Messages asked for at once: each is a window of up to 128 KiB (the relay's limit).
DEFAULT_FETCH = 256
# While messages flow a round takes what the server holds now; when it held nothing, the
# next request waits up to this long for more (one request per wait while idle).
FETCH_BUSY_S = 0.0
FETCH_IDLE_S = 0.5


def default_name(root: Path) -> str:
    """An ingester's stable name: this host and its folder."""
    return f"{socket.gethostname()}:{root.resolve()}"


class NatsIngester:
    """Pulls the partitions it leases into ``log`` until stopped (``Streams`` takes
    each stream's windows)."""

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
        self.url = check_nats_url(url)
        self.name = name
        self.fetch = fetch
        self.backoff = backoff or Backoff()
        self.streams = Streams(log, name=name, fetch=fetch, hold=hold, ack_wait=ack_wait)
        self.partitions = 1  # read from the stream on connecting
        self._client: Any = None
        self._pullers: dict[int, Puller] = {}
        self._moves: list[tuple[set[int], set[int]]] = []  # lease rounds not yet applied
        self._wait = FETCH_IDLE_S

    @property
    def taken(self) -> int:
        """Events written into the log (not counting duplicates)."""
        return self.streams.taken

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
            self.streams.reset()  # the acks of what it kept went with the old client
            self._pullers.clear()
        js = self._client.jetstream()
        self.partitions = await partitions_of(js)
        info = await js.consumer_info(STREAM, consumer_name(0))
        self.streams.ack_wait = info.config.ack_wait or self.streams.ack_wait
        self.streams.client = self._client
        buckets = (await js.key_value(LEASES), await js.key_value(MEMBERS))
        if leases is None:
            leases = Leases(self.name, self.partitions, *buckets)
        leases.leases, leases.members = buckets
        self._pullers = {p: Puller(self._client, STREAM, consumer_name(p)) for p in leases.held}
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
            await self.streams.take(stream, items)
        await self.streams.keep_alive()

    async def _apply_moves(self) -> None:
        """Pull the partitions taken, stop pulling those given up; hand back what this
        ingester kept of the latter's streams, for their new holder."""
        while self._moves:
            taken, lost = self._moves.pop(0)
            for where in lost:
                puller = self._pullers.pop(where, None)
                if puller is not None:
                    await puller.close()
            await self.streams.forget(lost, self.partitions)
            for where in taken - self._pullers.keys():
                self._pullers[where] = Puller(self._client, STREAM, consumer_name(where))


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
            signals.join(thread)  # a second signal still forces the exit meanwhile
    return code or (1 if failed.is_set() else 0)

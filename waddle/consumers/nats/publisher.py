"""The relay to NATS JetStream: a durable consumer that publishes every event to the broker.

``waddle-consume --relay nats://HOST:PORT`` and ``waddle sync nats://HOST:PORT`` run it.
A stream's consecutive events go out as one message (a window: their lines as the log
holds them, up to ``message_bytes``) on ``waddle.events.<partition>.<project>.<stream>``
(the partitions are read from the stream on connecting), with
``Nats-Msg-Id: <stream>:<first seq>-<last seq>`` as its header (``broker.pack``). A
window published again after a crash may be cut at other seqs, so the broker may keep
both; the ingesters take each seq once whatever windows carry it. An event whose line is
over what the server takes in a message (its ``max_payload``) goes as a ``skipped``
placeholder, with an error naming stream and seq: the server would refuse it for ever,
and the round (every stream) would wait behind it.

Delivery: at-least-once on the wire, exactly-once in the broker within its duplicate
window, and exactly-once in the ingesters' logs in any case (they are idempotent by
(stream, seq)). A stream's offset moves past an event only once JetStream acknowledged
that event (and every earlier one of the batch), so after a crash the relay publishes
again from its last commit and the broker drops the repeats. Offsets live in
``state/<name>.json``, the name being ``relay-nats-<host>-<port>``.

Ordering and backpressure: the streams of a round are published concurrently; within a
stream, windows go in seq order, up to ``window`` of them awaiting their acks at once.
``handle`` returns when the broker acknowledged the whole round, so nothing is read past
what is in flight. While the broker is unreachable (or has no stream: run
``waddle nats setup``), the round is retried with capped exponential backoff, forever
unless ``give_up_after`` says otherwise; the segments on disk are the queue, so nothing
is lost however long the outage lasts.

Blobs (images, artifacts) are not carried: events that name them arrive without them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import orjson

from waddle.consumers.base import Consumer, Offsets, run_consumer
from waddle.consumers.nats.broker import (
    MSG_ID,
    NotSetUp,
    check_nats_url,
    msg_id,
    pack,
    partitions_of,
    subject,
)
from waddle.consumers.nats.client import Loop, back_off, connect
from waddle.consumers.relay.client import Backoff
from waddle.consumers.relay.consumer import log_lines
from waddle.consumers.relay.parts import fill_gaps, fillable, placeholders
from waddle.errors import ConsumerLockedError, TransientError, WaddleError
from waddle.event_types import Event
from waddle.eventlog.reader import Batch, Offset
from waddle.eventlog.record import encode
from waddle.eventlog.segment import log_dir, segment_name
from waddle.signals import StopEvent, on_stop_signals

logger = logging.getLogger("waddle.nats")

# Messages of a stream awaiting their acks at once, and the most bytes of one message
# (the server's max_payload, 1 MiB by default, less room for headers, caps it further).
DEFAULT_WINDOW = 32
DEFAULT_MESSAGE_BYTES = 128 << 10
HEADER_ROOM = 4096
DEFAULT_TIMEOUT_S = 5.0
_HOST = socket.gethostname()


class BrokerUnreachable(TransientError):
    """The NATS server did not acknowledge a publish in time (down, or no stream)."""


def nats_relay_name(url: str) -> str:
    """The consumer name of a relay to ``url``: ``relay-nats-<host>-<port>``."""
    parts = urlsplit(check_nats_url(url))
    return f"relay-nats-{token_of(parts.hostname or 'host')}-{parts.port or 4222}"


def token_of(host: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in host.lower())


class NatsRelay(Consumer):
    """Publishes the log to JetStream. ``failure`` says why it stopped, if it did.

    ``give_up_after``: seconds the broker may stay unreachable before the relay stops
    (``waddle sync``); None retries forever. ``stop_on_failure``: set ``stop`` then.
    """

    durable = True

    def __init__(
        self,
        root: Path | str,
        url: str,
        *,
        stop: threading.Event | None = None,
        give_up_after: float | None = None,
        stop_on_failure: bool = False,
        window: int = DEFAULT_WINDOW,
        message_bytes: int = DEFAULT_MESSAGE_BYTES,
        timeout: float = DEFAULT_TIMEOUT_S,
        backoff: Backoff | None = None,
        name: str | None = None,
    ) -> None:
        self.root = Path(root)
        self._logs = os.fspath(log_dir(self.root))
        self.url = check_nats_url(url)
        self.name = name or nats_relay_name(url)
        self.stop = stop
        self.give_up_after = give_up_after
        self.stop_on_failure = stop_on_failure
        self.window = max(1, window)
        self.message_bytes = max(1, message_bytes)
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.failure: WaddleError | None = None
        self._acked: Offsets = {}
        self._projects: dict[str, str | None] = {}
        self._interrupted = threading.Event()
        self._loop: Loop | None = None
        self._client: Any = None
        self._connecting = asyncio.Lock()
        self._outage_since: float | None = None
        self._parked: set[str] = set()
        self._partitions = 1  # read from the stream on connecting

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Resume from the published offsets: exactly what the broker acknowledged."""
        self._acked = dict(offsets)
        self.failure = None
        self._interrupted.clear()
        self._loop = Loop(f"waddle-{self.name}")
        self._connecting = asyncio.Lock()
        self._outage_since = None
        return super().start(offsets)

    def handle(self, batches: list[Batch]) -> None:
        """Publish this round; each stream's offset moves once the broker holds its batch."""
        work = [(batch, self._lines(batch)) for batch in batches]
        if self.failure is not None or self._loop is None:
            return
        done = self._loop.run(self._round([(b.stream, e, x) for b, (e, x, _) in work]))
        for (batch, (_, _, whole)), landed in zip(work, done, strict=True):
            if landed and whole:
                before = self._acked.get(batch.stream, Offset())
                end = batch.offset
                self._acked[batch.stream] = Offset(
                    end.segment, end.position, max(end.seq, before.seq)
                )

    def _lines(self, batch: Batch) -> tuple[list[Event], list[bytes], bool]:
        """The events of ``batch`` to publish (``_gapless``), their lines, and whether
        they reach its last event. The lines are read back as the log holds them
        (``log_lines``, one ``pread``) when they are exactly the batch's; encoded
        otherwise (placeholders, a replayed batch)."""
        before = self.taken.get(batch.stream, Offset())
        fresh = self.fresh(batch)
        events, whole = self._gapless(batch.stream, fresh)
        same = len(events) == len(fresh) and (not fresh or events[0] is fresh[0])
        read = log_lines(self._logs, batch, before, fresh) if same and fresh else None
        lines = read.splitlines(keepends=True) if read is not None else []
        if len(lines) != len(events):
            lines = [encode(event) for event in events]
        return events, lines, whole

    def commit(self) -> Offsets:
        """The offsets the broker has acknowledged."""
        return dict(self._acked)

    def close(self) -> None:
        """Close the connection; what the broker did not acknowledge stays uncommitted."""
        self._interrupted.set()
        if self._loop is None:
            return
        if self._client is not None:
            client, self._client = self._client, None
            try:
                self._loop.run(client.close())
            except Exception as exc:  # closing a dead connection: nothing is left to lose
                logger.debug("waddle %s: closing the NATS connection: %s", self.name, exc)
        self._loop.close()
        self._loop = None

    def interrupt(self) -> None:
        """End any wait for the broker now."""
        self._interrupted.set()

    def stopping(self) -> bool:
        return (
            self._interrupted.is_set()
            or self.failure is not None
            or (self.stop is not None and self.stop.is_set())
        )

    def _gapless(self, stream: str, events: list[Event]) -> tuple[list[Event], bool]:
        """``events`` with a ``skipped`` placeholder for each seq the log lost since the
        last acknowledged one (as the HTTP relay sends them), so the broker never holds a
        gap its ingester would wait at for ever; and whether they reach the last event.
        A loss longer than placeholders stand for stops the stream there (logged once)."""
        if not events:
            return events, True
        after = self._acked.get(stream, Offset()).seq + 1
        lead: list[Event] = []
        if events[0]["seq"] > after and fillable(after, events[0]):
            lead = [*placeholders(after, events[0])]
        filled = fill_gaps([*lead, *events])
        end = len(filled)
        if filled[0]["seq"] != after or filled[-1]["seq"] - after + 1 != end:
            end = 0  # seqs only rise: a gap is left, so find where it starts
            while end < len(filled) and filled[end]["seq"] == after + end:
                end += 1
        if end < len(filled) and stream not in self._parked:
            self._parked.add(stream)
            logger.error(
                "waddle %s: stream %r stops at seq %d: its local log lacks more seqs from "
                "there than placeholders stand for (a segment removed, or corrupt lines); "
                "an ingester takes a stream only without gaps",
                self.name,
                stream,
                after + end,
            )
        return filled[:end], end == len(filled)

    async def _round(self, work: list[tuple[str, list[Event], list[bytes]]]) -> list[bool]:
        """Publish every stream's events; per stream, whether the broker holds them all."""
        return list(await asyncio.gather(*(self._publish(*each) for each in work)))

    async def _publish(self, stream: str, events: list[Event], lines: list[bytes]) -> bool:
        """Publish ``events`` (``lines``) in windows, each retried until every message is
        acknowledged."""
        if not events:
            return True
        start = 0
        attempt = 0
        while start < len(events):
            if self.stopping():
                return False
            try:
                start = await self._window(stream, events, lines, start)
            except BrokerUnreachable as exc:
                if not await self._wait_out(exc, attempt):
                    return False
                attempt += 1
                continue
            if self._outage_since is not None:
                self._outage_since = None
                logger.warning("waddle %s: the NATS server acknowledges again", self.name)
            attempt = 0
        return True

    async def _window(
        self, stream: str, events: list[Event], lines: list[bytes], start: int
    ) -> int:
        """Publish up to ``window`` messages from ``events[start]`` on without waiting for
        each ack in turn (``publish_async``); where the next one starts, once every one
        was acknowledged within ``timeout`` (``BrokerUnreachable`` otherwise)."""
        import nats.errors

        js = await self._jetstream()
        target = subject(self._project(stream), stream, self._partitions)
        most = self._client.max_payload - HEADER_ROOM
        windows = pack(lines, start, min(self.message_bytes, most), self.window)
        for first, _ in windows:
            if len(lines[first]) > most:  # alone in its window: pack cuts at the limit
                lines[first] = self._oversize(stream, events[first], len(lines[first]), most)
        acks: list[asyncio.Future[Any]] = []
        try:
            for first, end in windows:
                seqs = events[first]["seq"], events[end - 1]["seq"]
                headers = {MSG_ID: msg_id(stream, *seqs)}
                payload = b"".join(lines[first:end])
                acks.append(
                    await js.publish_async(
                        target, payload, wait_stall=self.timeout, headers=headers
                    )
                )
            done, _ = await asyncio.wait(acks, timeout=self.timeout)
        except (nats.errors.Error, OSError) as exc:
            raise BrokerUnreachable(f"publishing failed: {exc!r}") from exc
        finally:
            for ack in acks:
                ack.cancel()  # frees its slot; a late ack of an abandoned publish is moot
        failed = [a.exception() for a in done if a.exception() is not None]
        for error in failed:
            if not isinstance(error, (nats.errors.Error, asyncio.TimeoutError, OSError)):
                raise error
        if failed or len(done) < len(acks):
            missing = len(acks) - len(done) + len(failed)
            raise BrokerUnreachable(f"{missing} of {len(acks)} publishes were not acknowledged")
        return windows[-1][1]

    def _oversize(self, stream: str, event: Event, size: int, most: int) -> bytes:
        """The line of a ``skipped`` placeholder for ``event``, whose line of ``size`` bytes
        the server would refuse (over its ``max_payload`` less header room): refused for
        ever, it would hold up the stream and the round (every stream) behind it, so the
        stream goes on without it, the loss visible at the ingester (quarantined)."""
        reason = (
            f"the event's line ({size} bytes) is over what the NATS server takes in a "
            f"message ({most} bytes: its max_payload less header room); it stays in the "
            f"log of the relay on {_HOST}"
        )
        logger.error(
            "waddle %s: stream %r seq %d: %s; published as a skipped placeholder (raise "
            "max_payload in the nats-server config to carry such events)",
            self.name,
            stream,
            event["seq"],
            reason,
        )
        return encode({"seq": event["seq"], "ts": event["ts"], "type": "skipped", "reason": reason})

    async def _jetstream(self) -> Any:
        """The JetStream context, connecting first if needed and reading the stream's
        partitions (a failure, or a server not set up yet, is transient)."""
        async with self._connecting:  # the streams of a round share one connection
            if self._client is None or self._client.is_closed:
                import nats.errors

                try:
                    self._client = await connect(self.url, self.name)
                    self._partitions = await partitions_of(self._client.jetstream())
                except (nats.errors.Error, OSError, asyncio.TimeoutError, NotSetUp) as exc:
                    if self._client is not None:
                        await self._client.close()
                    raise BrokerUnreachable(f"cannot publish to {self.url}: {exc!r}") from exc
        return self._client.jetstream()

    async def _wait_out(self, exc: BrokerUnreachable, attempt: int) -> bool:
        """Sleep a backoff step; False when stopping or ``give_up_after`` has passed.
        The outage is the publisher's, not a stream's: one warning however many wait."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            logger.warning(
                "waddle %s: %s; retrying with backoff, nothing past the last acknowledged "
                "event is committed (is the server up, and was `waddle nats setup --url %s` "
                "run?)",
                self.name,
                exc,
                self.url,
            )
        since = self._outage_since
        if self.give_up_after is not None and time.monotonic() - since > self.give_up_after:
            self.fail(exc)
            return False
        return await back_off(self.backoff, attempt, self.stopping)

    def fail(self, exc: WaddleError) -> None:
        """Stop publishing: the broker stayed unreachable past ``give_up_after``."""
        if self.failure is not None:
            return
        self.failure = exc
        if self.stop_on_failure and self.stop is not None:
            self.stop.set()
            return
        logger.error("waddle %s: %s; publishing has stopped", self.name, exc)

    def _project(self, stream: str) -> str | None:
        """The project of ``stream``, from its first event (cached): part of the subject."""
        if stream not in self._projects:
            self._projects[stream] = _project_of(log_dir(self.root) / stream)
        return self._projects[stream]


def _project_of(stream_dir: Path) -> str | None:
    """The ``project`` of the stream's ``run`` event (seq 0), None when it is not held."""
    try:
        with open(stream_dir / segment_name(0), "rb") as handle:
            event = orjson.loads(handle.readline())
    except (OSError, orjson.JSONDecodeError):
        return None
    project = event.get("project") if type(event) is dict else None
    return project if isinstance(project, str) else None


def sync(root: Path | str, url: str, *, timeout: float, out: TextIO) -> int:
    """``waddle sync nats://``: publish what is on disk, then exit (0; 1 when the broker
    stayed unreachable for ``timeout`` seconds or a relay to it is already running)."""
    stop = StopEvent()
    relay = NatsRelay(
        root,
        url,
        stop=stop,
        give_up_after=timeout,
        stop_on_failure=True,
        timeout=min(DEFAULT_TIMEOUT_S, timeout),
    )
    restore = on_stop_signals(lambda signum: stop.set())
    try:
        committed = run_consumer(relay, relay.root, stop, once=True)
    except ConsumerLockedError:
        out.write(f"waddle sync: a relay to {url} already runs on {relay.root}; stop it first\n")
        return 1
    finally:
        restore()
    if relay.failure is not None or stop.is_set():
        out.write(
            f"waddle sync: stopped ({relay.failure or 'interrupted'}); run it again to resume\n"
        )
        return 1
    events = sum(offset.seq + 1 for offset in committed.values())
    out.write(f"waddle sync: {url} holds {events} events of {len(committed)} streams\n")
    return 0

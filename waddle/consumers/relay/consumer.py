"""The relay forwarder: a durable consumer that posts every stream to a central host.

Each round of batches (every stream with new events) is posted to ``URL/ingest/batch``
as few multi-stream requests, each under ``post_bytes`` (NDJSON, gzip unless
``WADDLE_RELAY_GZIP=0``, bearer token; ``client``), by a pool of ``senders`` threads
(``sender`` does the sending, resending and retrying): a machine costs its host one
request per round, not one per run. The events of one stream go strictly in seq order,
one batch per stream in flight; a host without ``/ingest/batch`` gets one request per
stream (``URL/ingest?stream=ID``). Lines go as the log holds them, not encoded again,
when the batch is exactly the lines read.

Delivery: at-least-once on the wire, exactly-once in the host's log. The host is
idempotent by (stream, seq) and all-or-nothing per request, and the relay commits a
stream's offset only once the host has answered that it holds every seq up to there;
after a crash the relay resends from its last commit and the host acknowledges what it
already has without writing it again. Offsets live in ``state/<name>.json`` (the name is
``relay-<host>-<port>``, so relays to two hosts never share offsets). A host that lacks
earlier events (409) gets them again from the local log; a seq the log lost (a bad line
skipped) goes as a ``skipped`` placeholder; a stream with a longer gap, or one the host
refuses, is *parked* (one error naming it, its events stay on disk) and the other
streams go on. A stream the host refuses *for now* while it takes the others (a 503 of
that stream: its fsync failed on the host, which refuses it until restarted) is
*deferred*: it backs off alone (capped exponential backoff, ``Backoff``), its new events
are read but not sent, and the first round or commit after its wait (the run loop
commits at idle moments while a stream is deferred: ``unsettled``) sends everything
after its acknowledged offset again from the log, in seq order, acknowledged only once
the host holds it all; the other streams go on meanwhile. (``waddle sync``, which waits
on every stream, retries it in place instead.)

Backpressure: ``handle`` returns once the previous round has landed, so at most one
round is in flight while the next one is read; ``commit`` waits for it (but for a live
round's first commit, which lets it land while the next round is read). While the host
is unreachable (connection errors, timeouts, 5xx) every request is retried with capped
exponential backoff and jitter, forever unless ``give_up_after`` says otherwise; the run
loop reads nothing more meanwhile, so the segments on disk are the queue and retention
keeps them: nothing is lost however long the outage lasts. Give the relay the run loop's
``stop`` event (or call ``interrupt``) so that a stop ends the wait. A refusal of the
token (401/403) stops forwarding to that host with one error message and no further
requests; nothing is committed past what the host acknowledged. Blobs go first: before a
batch is posted, ``blobs.BlobRelay`` makes sure the host holds every blob its events
name (HEAD, then PUT), and the offset commits only after both; a blob missing locally
parks the stream. Live tails are paced: after a round that only carries a few new
events per stream, each read to the end of its log, the next round is read no sooner
than ``linger`` seconds after this one was, and carries everything new since. The
relay's reading follows its sending: however many streams it tails, it reads them about
once per ``linger``, not once per poll."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from waddle.consumers.base import Consumer, Offsets, run_consumer
from waddle.consumers.relay.blobs import BlobRelay
from waddle.consumers.relay.client import DEFAULT_TIMEOUT_S, Backoff, check_url, gzip_wanted
from waddle.consumers.relay.parts import Part
from waddle.consumers.relay.sender import Sender
from waddle.errors import HostRefused, WaddleError
from waddle.event_types import Event
from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL, Batch, LogReader, Offset
from waddle.eventlog.segment import log_dir, segment_name
from waddle.ids import ID_CHARS
from waddle.signals import StopEvent, on_stop_signals

logger = logging.getLogger("waddle.relay")

# Raw NDJSON per request; the host takes 16 MiB by default and a 413 halves this.
DEFAULT_POST_BYTES = 4 << 20
DEFAULT_SENDERS = 4
# Rounds of a live tail (every batch small and at the end of its log) are at least this
# far apart, each carrying everything new: a machine sends its host at most two rounds a
# second (each one request under ``post_bytes``), not one request per run per poll. Half
# a second, not one: an event waits up to a linger and a round to be read, out of a 2 s
# budget from log to a central host's tables (1,000 live runs: p99 1.50 to 0.98 s). A
# backlog never waits.
DEFAULT_LINGER_S = 0.5
# A live tail spends at most about this share of its time reading rounds: a round that
# took R seconds of the loop thread's CPU to read is followed by the next no sooner than
# R / READ_SHARE after it began. With many live runs each round costs every stream a
# read (3,000 runs: about 0.3 s, so rounds about a second apart, as many as the VM's two
# cores could afford); with a few hundred, ``linger`` sets the pace. CPU, not wall time:
# the wait for news between rounds is not reading. A round that began more than
# MAX_PACE_S after the one before followed an idle stretch and is read at once, and no
# pace exceeds MAX_PACE_S.
READ_SHARE = 0.3
MAX_PACE_S = 2.0
SMALL_BATCH_EVENTS = 512
# The cyclic collector's thresholds in a relay's own process (``waddle relay``; see
# ``rare_collections``): each round of a live fleet
# allocates some 100,000 short-lived event dicts (3,000 streams), which hold no cycles,
# and with the default (700, 10, 10) the collector that they set off was 17% of a relay's
# samples (py-spy, 3,000 live runs). A larger first generation runs it about once a round.
RELAY_GC_THRESHOLDS = (50_000, 20, 10)
_UNSAFE = re.compile(f"[^{ID_CHARS}]+")
# Where ``waddle-consume --relay`` and ``waddle sync`` look for the host's token.
TOKEN_ENV = ("WADDLE_RELAY_TOKEN", "WADDLE_TOKEN")


def resolve_token(value: str | None, env: tuple[str, ...] = TOKEN_ENV) -> str | None:
    """The relay's token: ``value`` (``--token``) wins, else the first variable set in ``env``."""
    if value is not None:
        return value or None
    return next((os.environ[name] for name in env if os.environ.get(name)), None)


def relay_name(url: str) -> str:
    """The consumer name of a relay to ``url``: ``relay-<host>-<port>``."""
    parts = urlsplit(check_url(url))
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = _UNSAFE.sub("_", (parts.hostname or "host").lower())
    path = _UNSAFE.sub("_", parts.path.strip("/"))
    return (f"relay-{host}-{port}" + (f"-{path}" if path else ""))[:128]


class RelayConsumer(Consumer):
    """Forwards the log to one host. ``failure`` says why it stopped forwarding, if it did.

    ``give_up_after``: seconds the host may stay unreachable before the relay stops
    (``waddle sync``); None retries forever (the daemon). ``stop_on_failure``: set
    ``stop`` when forwarding stops, so the run loop ends instead of tailing on.
    """

    durable = True

    def __init__(
        self,
        root: Path | str,
        url: str,
        *,
        token: str | None = None,
        stop: threading.Event | None = None,
        give_up_after: float | None = None,
        stop_on_failure: bool = False,
        senders: int = DEFAULT_SENDERS,
        linger: float = DEFAULT_LINGER_S,
        post_bytes: int = DEFAULT_POST_BYTES,
        timeout: float = DEFAULT_TIMEOUT_S,
        compress: bool | None = None,
        backoff: Backoff | None = None,
        name: str | None = None,
        batching: bool = True,
    ) -> None:
        self.root = Path(root)
        self._logs = os.fspath(log_dir(self.root))
        self.url = check_url(url)
        self.name = name or relay_name(url)
        self.token = token
        self.stop = stop
        self.give_up_after = give_up_after
        self.stop_on_failure = stop_on_failure
        self.senders = max(1, senders)
        self.linger = linger
        self.failure: WaddleError | None = None
        self.parked: dict[str, str] = {}
        # Streams the host refuses for now: when each is tried again, and its attempt.
        self.deferred: dict[str, tuple[float, int]] = {}
        self._acked: Offsets = {}
        self._lock = threading.Lock()
        self._interrupted = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._flight: list[Future[None]] = []
        self._read_began = time.monotonic()  # when the round being handled was read
        self._read_cpu = time.thread_time()  # the loop thread's CPU then
        self._overlap = False  # the last round was live: commits let it land alone
        self._final = False  # the run loop is ending: its commit waits for everything
        self._owed = False  # it ended caught up, not stopped: deferred streams are an error
        self.sender = Sender(
            self,
            self.root,
            self.url,
            token,
            timeout=timeout,
            compress=gzip_wanted() if compress is None else compress,
            backoff=backoff or Backoff(),
            post_bytes=post_bytes,
            give_up_after=give_up_after,
            quiet=stop_on_failure,
            wake=self._interrupted,
            batching=batching,
        )
        self.blobs = BlobRelay(
            self,
            self.root,
            self.url,
            token,
            timeout=timeout,
            backoff=backoff or Backoff(),
            give_up_after=give_up_after,
        )

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Resume from the published offsets: they are exactly what the host acknowledged."""
        self._acked = dict(offsets)
        self.failure = None
        self.parked = {}
        self.deferred = {}
        self._interrupted.clear()
        self._flight = []
        self._read_began, self._read_cpu = time.monotonic(), time.thread_time()
        self._overlap = self._final = self._owed = False
        self._pool = ThreadPoolExecutor(self.senders, thread_name_prefix=f"waddle-{self.name}")
        return super().start(offsets)

    def handle(self, batches: list[Batch]) -> None:
        """Start sending this round, once the host holds the previous one.

        The round's streams go in multi-stream requests, in parallel. After a live
        round (every batch small and read to the end of its log) it waits until
        ``linger`` seconds after this round was read before the next one is: rounds of
        a live tail come no faster than they are sent, so thousands of live streams are
        read once per ``linger``, not once per poll, and an event waits at most
        ``linger`` before it is sent. A round after an idle stretch is read at once.
        Nor sooner than its reading took (CPU) divided by ``READ_SHARE``, at most
        ``MAX_PACE_S``: the more live streams, the longer a round takes to read, and the
        further apart rounds are.
        """
        reading = self._reading()
        self._settle()
        live = self._live(batches)
        parts: list[tuple[Part, Offset]] = []
        for batch in batches:
            before = self.taken.get(batch.stream, Offset())
            events = self.fresh(batch)
            if self.failure is not None or self._pool is None or batch.stream in self.parked:
                continue
            if batch.stream in self.deferred:
                continue  # sent from the log once its wait is over (``_resend``)
            if not events:
                self._ack(batch.stream, batch.offset)
                continue
            lines = log_lines(self._logs, batch, before, events)
            parts.append((Part.of(batch.stream, events, lines), batch.offset))
        ends = {part.stream: end for part, end in parts}
        pool = self._pool
        if pool is None:
            return
        for request in self.sender.pack([part for part, _ in parts]):
            self._flight.append(pool.submit(self._deliver, [(p, ends[p.stream]) for p in request]))
        self._resend_due()
        if live:
            pace = min(max(self.linger, reading / READ_SHARE), MAX_PACE_S)
            self.sender.sleep(self._read_began + pace - time.monotonic())
        self._read_began, self._read_cpu = time.monotonic(), time.thread_time()
        self._overlap = live

    def _reading(self) -> float:
        """CPU seconds the loop thread spent reading this round since the last one was
        handled; none after an idle stretch (the wait was not reading, and the rare
        wakeups of a quiet tail add up over an hour)."""
        if time.monotonic() - self._read_began > MAX_PACE_S:
            return 0.0
        return time.thread_time() - self._read_cpu

    def commit(self) -> Offsets:
        """The offsets the host has acknowledged, once every batch in flight has landed
        (and deferred streams whose wait is over were tried again).

        Except after a live round: the run loop commits every second, and waiting there
        kept the next round from being read while this one landed, so a live tail was
        read no faster than its rounds landed, whatever ``linger``. Then it returns what
        has landed so far; the next ``handle`` settles the round, and the loop commits
        at idle moments while requests are in flight (``unsettled``). Only for a relay
        given the run loop's ``stop``, and never the loop's last commit (``finishing``:
        a stop, or ``once`` caught up), which waits for them all."""
        if self._overlap and not self._final and self.stop is not None and not self.stopping():
            self._reap()
            self._resend_due()
            return self.acked()
        self._settle()
        if self.deferred:
            self._resend_due(every=self._final)
            self._settle()
        if self._final:
            self._owed = not self.stopping()
        return self.acked()

    def finishing(self) -> None:
        """The loop's last commit comes next: it waits for every request in flight and
        tries each deferred stream once more, whatever its wait. If the loop ended caught
        up (``once``), not stopped, a stream still deferred after it is an error at
        ``close``: ``waddle-consume --once`` must not report success having left it."""
        self._final = True

    def unsettled(self) -> bool:
        """While requests are in flight, or a stream is deferred (its resend comes from
        ``commit`` when nothing grows)."""
        return bool(self._flight or self.deferred)

    def acked(self) -> Offsets:
        """The offsets the host has acknowledged so far (does not wait)."""
        with self._lock:
            return dict(self._acked)

    def close(self) -> None:
        """Stop sending: batches still in flight are abandoned (they were not committed).

        Raises ``WaddleError`` naming the streams still deferred when the loop ended
        caught up rather than stopped (``once``): their events were not delivered."""
        self._interrupted.set()
        try:
            self._settle()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self.sender.close()
            self.blobs.close()
        left = sorted(self.deferred) if self._owed else []
        if left:
            raise WaddleError(
                f"relay {self.name}: {self.url} refused stream(s) {', '.join(map(repr, left))} "
                "for now (a 503 of those streams: see the warnings above); their events were "
                "not delivered and stay on disk, to be sent by the next run"
            )

    def _reap(self) -> None:
        """Forget the requests that have landed; re-raise what went wrong in one (a bug)."""
        flight, self._flight = self._flight, []
        for future in flight:
            if future.done():
                future.result()
            else:
                self._flight.append(future)

    def _settle(self) -> None:
        """Wait for every request in flight; re-raise what went wrong in a sender (a bug)."""
        flight, self._flight = self._flight, []
        for future in flight:
            future.result()

    def interrupt(self) -> None:
        """End any wait for the host now; what it did not acknowledge stays uncommitted."""
        self._interrupted.set()

    def stopping(self) -> bool:
        """Whether sending should end now: a stop, an interrupt, or forwarding failed."""
        return (
            self._interrupted.is_set()
            or self.failure is not None
            or (self.stop is not None and self.stop.is_set())
        )

    def _deliver(self, request: list[tuple[Part, Offset]]) -> None:
        """Send one request's parts, each after its blobs; acknowledge each part's end
        offset once the host holds it."""
        if self.stopping():
            return
        ready = [
            (part, end)
            for part, end in request
            if self.blobs.ensure(part.stream, part.events, part.lines)
        ]
        if not ready:
            return
        held = self.sender.send_parts([part for part, _ in ready])
        for (part, end), landed in zip(ready, held, strict=True):
            if landed:
                self._ack(part.stream, end)

    def _ack(self, stream: str, end: Offset) -> None:
        """The host holds ``stream`` up to ``end``.

        Once stopping, nothing more is acknowledged: an earlier batch of the stream may
        not have landed, and an empty batch after it must not move the offset past it.
        """
        if self.stopping():
            return
        with self._lock:
            before = self._acked.get(stream, Offset())
            self._acked[stream] = Offset(end.segment, end.position, max(end.seq, before.seq))

    def _live(self, batches: list[Batch]) -> bool:
        """Whether this round is a live tail, not a backlog: every batch small and read to
        the end of its log (``drained``, as the reader found it: a live stream that grew
        since is still a live tail)."""
        return self.linger > 0 and all(
            batch.drained and len(batch.events) < SMALL_BATCH_EVENTS for batch in batches
        )

    def fail(self, exc: WaddleError) -> None:
        """Stop forwarding to this host: a refused token, or ``give_up_after`` passed."""
        with self._lock:
            if self.failure is not None:
                return
            self.failure = exc
        if self.stop_on_failure:
            if self.stop is not None:
                self.stop.set()
            return
        logger.error(
            "waddle relay %s: %s. Forwarding to this host has stopped and will not be "
            "retried; every event stays on disk and nothing past what the host acknowledged "
            "is committed. Fix it and restart the relay.",
            self.name,
            exc,
        )

    def defer(self, stream: str, exc: HostRefused) -> bool:
        """Back ``stream`` off alone after the host refused it for now (``exc``, a 503 of
        that stream), and send it again from the log once its wait is over; False when
        this relay waits on it in place instead (``give_up_after``: ``waddle sync``)."""
        if self.give_up_after is not None:
            return False
        if self._postpone(stream, exc.retry_after) == 0:
            logger.warning(
                "waddle relay %s: %s; that stream backs off alone and is sent again from the "
                "log (at most %.0fs apart), the other streams go on",
                self.name,
                exc,
                self.sender.backoff.cap,
            )
        return True

    def _postpone(self, stream: str, hint: float | None = None) -> int:
        """Defer ``stream`` for its next backoff (``hint``: the host's Retry-After); the
        attempt that makes."""
        with self._lock:
            attempt = self.deferred[stream][1] + 1 if stream in self.deferred else 0
            delay = self.sender.backoff.delay(attempt, hint)
            self.deferred[stream] = (time.monotonic() + delay, attempt)
        return attempt

    def _resend_due(self, *, every: bool = False) -> None:
        """Start sending again each deferred stream whose wait is over (see ``_resend``),
        or ``every`` one (the last commit, after a settle: none is being resent)."""
        now = time.monotonic()
        with self._lock:
            due = [
                s
                for s, (at, _) in self.deferred.items()
                if (every or at <= now) and s not in self.parked
            ]
            for stream in due:  # not due again while this resend runs: it defers anew
                self.deferred[stream] = (math.inf, self.deferred[stream][1])
        for stream in due:
            if self._pool is not None:
                self._flight.append(
                    self._pool.submit(self._resend, stream, self.taken.get(stream, Offset()))
                )

    def _resend(self, stream: str, end: Offset) -> None:
        """Send deferred ``stream`` again from the log, from its acknowledged offset to
        ``end`` (what the relay has read of it), and acknowledge ``end`` once the host
        holds it all: the stream is then no longer deferred. If it does not land, the
        sender has deferred it again (or parked it, or the relay is stopping).

        While a stream is deferred ``handle`` sends and acknowledges nothing of it, and
        at most one of these runs per stream at a time (a round settles them first)."""
        offset = self.acked().get(stream, Offset())
        reader, sent = LogReader(self.root), offset.seq
        while sent < end.seq and not self.stopping():
            batch = reader.read(stream, offset)
            if batch.offset == offset:
                break
            offset = batch.offset
            events = [event for event in batch.events if sent < event["seq"] <= end.seq]
            if not events:
                continue
            if not self.blobs.ensure(stream, events) or not self.sender.send(stream, events):
                return
            sent = events[-1]["seq"]
        if self.stopping():
            return
        if sent < end.seq:  # the log held less than was read of it: try again later
            self._postpone(stream)
            return
        self._ack(stream, end)
        with self._lock:
            self.deferred.pop(stream, None)
        logger.warning("waddle relay %s: %s takes stream %r again", self.name, self.url, stream)

    def park(self, stream: str, reason: str) -> None:
        """Stop forwarding one stream (its events stay on disk); said once."""
        with self._lock:
            if stream in self.parked:
                return
            self.parked[stream] = reason
            self.deferred.pop(stream, None)
        logger.error(
            "waddle relay %s: stream %r is not forwarded to %s: %s. Its events stay on disk; "
            "the other streams go on. Restart the relay once the cause is fixed.",
            self.name,
            stream,
            self.url,
            reason,
        )


def log_lines(logs: str, batch: Batch, before: Offset, events: list[Event]) -> bytes | None:
    """The lines of ``events`` as the log holds them (``logs``: the log folder), read
    again from the segment, or None unless they are exactly the batch's lines (no bad
    line, no replayed event, no gap): what the relay sends without encoding the events.

    It runs for every live stream of every round, so it reads with one ``pread`` and
    checks only the first and last lines' seqs (the reader checked every line)."""
    end = batch.offset
    first, last = events[0]["seq"], events[-1]["seq"]
    if batch.corrupt or batch.restarted or len(events) != len(batch.events):
        return None
    if last - first + 1 != len(events):
        return None
    start = before.position if before.segment == end.segment else 0
    path = f"{logs}/{batch.stream}/{segment_name(end.segment)}"  # a fifteenth of os.path.join
    try:
        handle = os.open(path, os.O_RDONLY)
        try:
            lines = os.pread(handle, end.position - start, start)
        finally:
            os.close(handle)
    except OSError:
        return None
    if lines.count(b"\n") != len(events) or not lines.endswith(b"\n"):
        return None
    edges = (lines[: lines.find(b"\n")], lines[lines.rfind(b"\n", 0, -1) + 1 : -1])
    if [_seq_of(edge) for edge in edges] != [first, last]:
        return None
    return lines


def _seq_of(line: bytes) -> object:
    """The seq of one line, None when it has none (two lines: no collector pause needed)."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value.get("seq") if type(value) is dict else None


def relay_until_stopped(
    root: Path | str,
    url: str,
    *,
    token: str | None = None,
    interval: float = DEFAULT_POLL_INTERVAL,
) -> int:
    """The relay alone (``waddle relay URL``): forward until SIGINT or SIGTERM, then commit
    what the host acknowledged and return 0 (1 when the relay could not run)."""
    stop = StopEvent()  # a signal's set() also wakes a tail waiting with nothing live
    relay = RelayConsumer(root, url, token=token, stop=stop)
    restore = on_stop_signals(lambda signum: stop.set())
    try:
        with rare_collections():
            run_consumer(relay, relay.root, stop, interval=interval)
    except WaddleError as exc:
        logger.error("waddle relay: %s", exc)
        return 1
    finally:
        restore()
    return 0


@contextlib.contextmanager
def rare_collections() -> Iterator[None]:
    """The cyclic collector at ``RELAY_GC_THRESHOLDS`` for the block: for ``waddle
    relay``, whose process is the relay alone, not for a relay that shares a process
    with other consumers. (``waddle sync`` gains nothing: its batches are large and
    live long, so a larger first generation only moves the same work.)"""
    thresholds = gc.get_threshold()
    gc.set_threshold(*RELAY_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)

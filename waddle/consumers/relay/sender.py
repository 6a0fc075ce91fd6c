"""Sending streams' events until the host holds them: the relay's sending half.

A ``Sender`` is shared by a relay's sending threads, each with its own connection
(``client.IngestClient``). ``send_parts(parts)`` posts several streams' events in one
request to ``/ingest/batch`` (``pack`` cuts a round into such requests) and settles each
part as ``send`` would have: ``send(stream, events)`` returns True once the host holds
the last of ``events``, and False when they will not land now (a stop, a refusal, an
outage longer than ``give_up_after``), having told its ``owner`` why:

* requests stay under ``post_bytes`` and never span a seq gap of the local log; a 413
  halves ``post_bytes`` and the request is sent again in smaller parts;
* a host that lacks earlier events (409) gets them again, reread from the local log
  from the seq it expects; an event or stream the host refuses parks the stream
  (``owner.park``);
* a seq the local log lost (a corrupt line its reader skipped, a removed segment) is
  sent as a ``skipped`` placeholder naming the loss, so the host's stream stays gapless
  and every later event reaches it; a gap of more than ``parts.MAX_SKIPPED`` parks the
  stream instead (that is a lost segment or a corrupt seq, for an operator to look at);
* an unreachable host (connection errors, timeouts, 5xx) is retried with capped
  exponential backoff and jitter (``Backoff``), the outage logged once when it starts
  and once when it ends; past ``give_up_after`` seconds, or on a refusal of the token,
  ``owner.fail`` stops the relay for that host.

A part the host did not take whole (its 409) goes on alone through ``send``, which
resends what the host lacks; a part it refused (400) parks only that stream. A 503 that
refuses one stream while the host takes others (``write_failed`` or ``log_unavailable``,
of a part or of ``/ingest``) goes to ``owner.defer``, which backs that stream off alone
and sends it again later; where the owner declines (``waddle sync``, which waits on
every stream), it is retried in place with backoff. Parts answered a host-wide 503
(``shutting_down``: the host is going away) are the host's outage, not their streams':
they go again together after one backoff. A
host without ``/ingest/batch`` (404, 405) is sent each stream alone from then on (said
once). A multi-stream request refused as a whole (a 400: relay and host disagree about
its framing, a bug on one side) has its parts sent alone, and each cause is logged once
with the host's detail and line.

Every wait ends promptly once ``owner.stopping()`` is true (``wake`` is set to hurry it).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeGuard, TypeVar

from waddle.consumers.relay.client import Backoff, Held, IngestClient, part_header
from waddle.consumers.relay.parts import Part, fill_gaps, fillable, placeholders
from waddle.errors import HostBusy, HostDenied, HostRefused, TransientError, WaddleError
from waddle.event_types import Event
from waddle.eventlog.reader import LogReader, Offset
from waddle.eventlog.record import encode
from waddle.eventlog.segment import list_segments

logger = logging.getLogger("waddle.relay")

# Codes of a 503 that refuse one stream while the host takes the others (its fsync
# failed, its log cannot be opened): that stream backs off alone (``Owner.defer``).
STREAM_BUSY = frozenset({"write_failed", "log_unavailable"})
# Nested rereads (the host losing events again while the relay resends them) before the
# stream is parked rather than chased forever.
MAX_REWINDS = 8
_WAIT_SLICE_S = 0.1


class Owner(Protocol):
    """What a ``Sender`` reports to (the relay consumer)."""

    parked: dict[str, str]

    def stopping(self) -> bool: ...

    def fail(self, exc: WaddleError) -> None: ...

    def park(self, stream: str, reason: str) -> None: ...

    def defer(self, stream: str, exc: HostRefused) -> bool: ...


class _TooLarge(Exception):
    """The host's body limit is below this request (a 413)."""


class _Unframed(Exception):
    """The host refused a multi-stream request as a whole (a 400): send its parts alone."""


_T = TypeVar("_T")


class Sender:
    """Posts streams to one host for ``owner``; thread-safe, one connection per thread."""

    def __init__(
        self,
        owner: Owner,
        root: Path,
        url: str,
        token: str | None,
        *,
        timeout: float,
        compress: bool,
        backoff: Backoff,
        post_bytes: int,
        give_up_after: float | None,
        quiet: bool,
        wake: threading.Event,
        batching: bool = True,
    ) -> None:
        self.owner = owner
        self.root = root
        self.url = url
        self.token = token
        self.timeout = timeout
        self.compress = compress
        self.backoff = backoff
        self.post_bytes = post_bytes
        self.give_up_after = give_up_after
        self.quiet = quiet
        self.wake = wake
        self.batching = batching
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[IngestClient] = []
        self._outage_since: float | None = None
        self._unframed: set[str] = set()  # causes of whole-request 400s already logged

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def client(self) -> IngestClient:
        """This thread's connection to the host."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = IngestClient(
                self.url, self.token, timeout=self.timeout, compress=self.compress
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def pack(self, parts: Sequence[Part]) -> list[list[Part]]:
        """``parts`` cut into requests under ``post_bytes`` (one part each while the host
        takes no multi-stream requests); a part larger than that, or with a gap left
        (``send`` sends it in pieces), is a request alone."""
        requests: list[list[Part]] = []
        size = self.post_bytes
        for part in parts:
            alone = not self.batching or not part.gapless
            framed = _framed(part)
            if alone or size + framed > self.post_bytes:
                requests.append([])
                size = 0
            requests[-1].append(part)
            size = self.post_bytes if alone else size + framed
        return requests

    def send_parts(self, parts: list[Part]) -> list[bool]:
        """Post ``parts`` (distinct streams) in one request; per part, whether the host
        now holds all of its events (False: see ``send``).

        A request whose every part the host answered a host-wide 503 (``shutting_down``,
        ``unavailable``: it is going away, not refusing those streams) is an outage,
        waited out and timed as an unreachable host's request is; parts answered so
        beside parts it took are posted again together at once. Only a 503 of one
        stream (``STREAM_BUSY``) is that stream's alone."""
        if not self.batching or not all(part.gapless for part in parts):
            return [self.send(part.stream, part.events) for part in parts]
        held = [False] * len(parts)
        todo = list(range(len(parts)))
        while todo:
            landed, away = self._post_parts([parts[i] for i in todo])
            for i, ok in zip(todo, landed, strict=True):
                held[i] = ok
            todo = [todo[j] for j in away]
        return held

    def _post_parts(self, parts: list[Part]) -> tuple[list[bool], list[int]]:
        """One multi-stream request of ``parts``: per part whether the host holds it, and
        the indices of the parts the host answered it is going away (to post again)."""
        try:
            answers = self._exchange(
                lambda client: _outage_if_all_away(
                    client.post_batch(
                        [(part.stream, len(part.events), part.lines) for part in parts]
                    )
                ),
                self._batch_denied,
            )
        except _TooLarge:
            if len(parts) == 1:
                return [self.send(parts[0].stream, parts[0].events)], []
            self.post_bytes = max(1, sum(map(_framed, parts)) // 2)
            half = len(parts) // 2
            return self.send_parts(parts[:half]) + self.send_parts(parts[half:]), []
        except _Unframed:
            return [self.send(part.stream, part.events) for part in parts], []
        if answers is None:
            return [False] * len(parts), []
        away = [i for i, answer in enumerate(answers) if _refuses_host(answer)]
        held = [
            False if _refuses_host(answer) else self._settle(part, answer)
            for part, answer in zip(parts, answers, strict=True)
        ]
        return held, away

    def _settle(self, part: Part, answer: Held | HostRefused) -> bool:
        """Whether the host holds ``part`` after its answer, resending what it lacks."""
        first, last = part.events[0]["seq"], part.events[-1]["seq"]
        if isinstance(answer, Held):
            if not answer.gap and answer.seq >= last:
                return True
            lacks = answer.gap and answer.seq < first - 1
            if lacks and not self._resend_from_log(part.stream, answer.seq, first - 1, 1):
                return False
            return self.send(part.stream, part.events)
        if isinstance(answer, HostBusy):  # of this stream alone (``send_parts``)
            if self.owner.defer(part.stream, answer):
                return False  # the host took the request: only this stream is refused now
            return self.send(part.stream, part.events)  # alone, with backoff
        if isinstance(answer, HostDenied) and answer.scope == "host":
            self.owner.fail(answer)
        else:
            self.owner.park(part.stream, str(answer))
        return False

    def _batch_denied(self, exc: HostDenied) -> None:
        """A multi-stream request refused as a whole."""
        if exc.status == 413:
            raise _TooLarge from exc
        if exc.status in (404, 405):
            with self._lock:
                was, self.batching = self.batching, False
            if was:
                logger.warning(
                    "waddle relay: %s has no /ingest/batch (an older host); sending each "
                    "stream in requests of its own",
                    self.url,
                )
            raise _Unframed from exc
        if exc.scope == "host":
            self.owner.fail(exc)
            return
        with self._lock:
            new = exc.code not in self._unframed
            self._unframed.add(exc.code)
        if new:
            logger.warning(
                "waddle relay: %s refused a multi-stream request as a whole: %s. The relay "
                "and the host disagree about /ingest/batch framing (a bug on one side); "
                "sending each stream of such a request alone",
                self.url,
                exc,
            )
        raise _Unframed from exc

    def send(self, stream: str, events: Sequence[Event], depth: int = 0) -> bool:
        """Post ``events`` (seq order) until the host holds the last; False if it cannot."""
        events = fill_gaps(events)
        lines = [encode(event) for event in events]
        seqs = [event["seq"] for event in events]
        index = 0
        while index < len(lines):
            end = self._chunk_end(lines, seqs, index)
            try:
                held = self._post(stream, b"".join(lines[index:end]))
            except _TooLarge:
                if end - index == 1:
                    self.owner.park(
                        stream,
                        f"event seq {seqs[index]} ({len(lines[index])} bytes) "
                        "is larger than the host accepts in one request",
                    )
                    return False
                self.post_bytes = max(1, sum(map(len, lines[index:end])) // 2)
                continue
            if held is None:
                return False
            if held.gap and held.seq < seqs[index] - 1:
                if depth >= MAX_REWINDS:
                    self.owner.park(stream, "the host kept losing events while they were resent")
                    return False
                if not self._resend_from_log(stream, held.seq, seqs[index] - 1, depth + 1):
                    return False
                continue
            after = bisect.bisect_right(seqs, held.seq, index, len(seqs))
            if after == index:
                self.owner.park(stream, f"the host answered that it holds seq {held.seq} only")
                return False
            index = after
        return True

    def _chunk_end(self, lines: list[bytes], seqs: list[int], index: int) -> int:
        """End of the request starting at ``index``: under ``post_bytes``, no seq gap."""
        size = len(lines[index])
        end = index + 1
        while end < len(lines) and seqs[end] == seqs[end - 1] + 1:
            size += len(lines[end])
            if size > self.post_bytes:
                break
            end += 1
        return end

    def _resend_from_log(self, stream: str, after: int, until: int, depth: int) -> bool:
        """Send seqs ``after+1 .. until`` of ``stream`` again, read from the local log."""
        reader = LogReader(self.root)
        offset = _locate(reader, stream, after)
        expected = after + 1
        while expected <= until and not self.owner.stopping():
            batch = reader.read(stream, offset)
            if batch.offset == offset:
                break
            offset = batch.offset
            if not batch.events:
                continue
            if not fillable(expected, batch.events[0]):
                break  # the log lost more than placeholders should stand for
            events: list[Event] = [*placeholders(expected, batch.events[0])]
            events += [e for e in batch.events if e["seq"] <= until]
            if not self.send(stream, events, depth):
                break
            expected = events[-1]["seq"] + 1
        if expected <= until and not self.owner.stopping() and stream not in self.owner.parked:
            self.owner.park(
                stream,
                f"the host needs seq {expected}, and the local log lacks more seqs from there "
                "than placeholders stand for (a segment removed, or a corrupt seq); "
                "the host takes a stream only without gaps",
            )
        return expected > until

    def _post(self, stream: str, body: bytes) -> Held | None:
        """One request of ``stream``, retried while the host is unreachable; None when it
        will not land."""

        def denied(exc: HostDenied) -> None:
            if exc.status == 413:
                raise _TooLarge from exc
            if exc.scope == "host":
                self.owner.fail(exc)
            else:
                self.owner.park(stream, str(exc))

        return self._exchange(lambda client: client.post(stream, body), denied, stream)

    def _exchange(
        self,
        call: Callable[[IngestClient], _T],
        denied: Callable[[HostDenied], None],
        stream: str | None = None,
    ) -> _T | None:
        """``call`` on this thread's connection, retried while the host is unreachable;
        None when it will not land (``denied`` has dealt with a refusal, or may raise;
        a 503 that refuses ``stream`` alone was handed to ``owner.defer``)."""
        attempt = 0
        client = self.client()
        while not self.owner.stopping():
            began = time.monotonic()
            try:
                result = call(client)
            except TransientError as exc:
                if stream is not None and _refuses_stream(exc) and self.owner.defer(stream, exc):
                    return None
                if not self._wait_out(exc, attempt, began):
                    return None
                attempt += 1
                continue
            except HostDenied as exc:
                denied(exc)
                return None
            self._reachable()
            if self.compress and not client.compress:
                self._no_gzip()
            return result
        return None

    def _wait_out(self, exc: TransientError, attempt: int, began: float) -> bool:
        """Back off after a transient failure; False when the relay should stop trying.

        An outage is timed from the start of the first request that failed, so a host
        that accepts connections and then hangs is given up on as promptly as one that
        refuses them.
        """
        now = time.monotonic()
        with self._lock:
            if self._outage_since is None:
                self._outage_since = began
                if not self.quiet:
                    logger.warning(
                        "waddle relay: %s; retrying with backoff (at most %.0fs apart). The "
                        "log on disk is the queue: nothing is lost while the host is away.",
                        exc,
                        self.backoff.cap,
                    )
            since = self._outage_since
        hint = exc.retry_after if isinstance(exc, HostRefused) else None
        delay = self.backoff.delay(attempt, hint)
        if self.give_up_after is not None:
            left = since + self.give_up_after - now
            if left <= 0:
                self.owner.fail(
                    TransientError(
                        f"could not reach {self.url} within {self.give_up_after:g}s ({exc})"
                    )
                )
                return False
            delay = min(delay, left)
        return not self.sleep(delay)

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when stopped."""
        deadline = time.monotonic() + seconds
        while not self.owner.stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.wake.wait(min(left, _WAIT_SLICE_S))
        return True

    def _reachable(self) -> None:
        if self._outage_since is None:
            return
        with self._lock:
            since, self._outage_since = self._outage_since, None
        if since is not None and not self.quiet:
            logger.warning(
                "waddle relay: %s is reachable again after %.0fs; resuming",
                self.url,
                time.monotonic() - since,
            )

    def _no_gzip(self) -> None:
        """The host reads no gzip: every thread sends it plain from now on; said once."""
        with self._lock:
            if not self.compress:
                return
            self.compress = False
            for client in self._clients:
                client.compress = False
        logger.warning(
            "waddle relay: %s does not take gzip-compressed bodies; sending uncompressed",
            self.url,
        )


def _refuses_stream(exc: TransientError) -> TypeGuard[HostBusy]:
    """Whether ``exc`` is the host refusing one stream for now, not the host being away."""
    return isinstance(exc, HostBusy) and exc.code in STREAM_BUSY


def _refuses_host(answer: Held | HostRefused) -> TypeGuard[HostBusy]:
    """Whether a part's ``answer`` is the host being away (a 503 not of that stream)."""
    return isinstance(answer, HostBusy) and not _refuses_stream(answer)


def _outage_if_all_away(answers: list[Held | HostRefused]) -> list[Held | HostRefused]:
    """``answers``, unless the host answered every part that it is going away: then that
    refusal is raised, so ``_exchange`` waits it out as an outage (one warning, its clock
    running, ``give_up_after`` honoured) instead of taking it as the host reachable."""
    first = answers[0] if answers else None
    if first is not None and _refuses_host(first) and all(map(_refuses_host, answers)):
        raise first
    return answers


def _framed(part: Part) -> int:
    """The bytes ``part`` adds to a multi-stream request: its header line and its lines."""
    return len(part_header(part.stream, len(part.events))) + len(part.lines)


def _locate(reader: LogReader, stream: str, after: int) -> Offset:
    """Where to read ``stream`` from to get the events after seq ``after``."""
    segments = list_segments(reader.log_dir / stream)
    start = [first for first in segments if first <= after + 1]
    return Offset(start[-1] if start else (segments[0] if segments else 0), 0, after)

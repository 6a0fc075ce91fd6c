"""The tailing reader: every consumer reads the log through this module.

What it assumes of writers: one writer per stream; lines are appended whole or rolled
back (a torn final line is only ever an unfinished write); a segment is sealed once a
later segment of its stream exists and never grows again; in file order each line's
seq is the seq of the line before it + 1, and a segment's first seq is in its name.

What it guarantees: events of a stream come in file order, each event at most once per
``Offset`` (events whose seq is not above ``Offset.seq`` are skipped, so a replay is
harmless); it never reads past the last ``\\n`` of the active segment. Whatever loses
events is reported (stream, segment, byte offset) as a ``Corruption`` in the batch and
in the log, and reading goes on:

* a complete line that is not a valid event, or a torn line at the end of a *sealed*
  segment: skipped;
* seqs missing before a line, or between two segments (a segment was deleted);
* a line whose seq jumps ahead while the lines around it agree with each other: its seq
  is corrupt, and it is skipped (taken, it would make every later event look like a
  duplicate); a jump in the last line of the active segment waits for the next line;
* a stream deleted and created again behind the offset: it is read again from its
  start as a new epoch (``Batch.restarted``).

Polling is the waiting mechanism, so it works the same on local and network
filesystems. What it costs follows what changes (``follow``, ``waddle.eventlog.parking``):
a finished stream is parked, and checked only rarely and cheaply (two stats) until it
changes; the log folder, and a stream's folder, are listed again only when their
mtime moves; where the OS has change notification (``waddle.eventlog.watch``), a parked
stream that changes is checked at once; a stream whose writer in this process says when
it grew (``Hints``: the host's ``/ingest``) is read when it grew, and otherwise rarely.
With no stream live and notification up, ``follow`` does not poll: it waits until a
notification, a hint or ``wake`` comes (``IDLE_WAIT_S`` at most).
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from waddle.eventlog.parking import Parking, settled
from waddle.eventlog.record import BadLine, decode
from waddle.eventlog.seek import MAX_LINE_BYTES, line_start, seq_before
from waddle.eventlog.segment import list_segments, log_dir, segment_name
from waddle.ids import is_valid_id
from waddle.signals import StopEvent

if TYPE_CHECKING:  # the producer reads the log too: no import it does not need
    from waddle.event_types import Event
    from waddle.eventlog.watch import HintQueue

_SEQ = operator.itemgetter("seq")

logger = logging.getLogger("waddle.eventlog")

DEFAULT_BATCH_BYTES = 1 << 20
DEFAULT_POLL_INTERVAL = 0.05
# How long ``follow`` may wait with no stream live, when notifications will wake it: it
# bounds how late the rare checks are, and what a lost notification delays.
IDLE_WAIT_S = 1.0

_Key = tuple[int, int]  # a folder's inode and mtime: what changes when its entries do
_FIRST_READ = 64 << 10


@dataclass(frozen=True, slots=True)
class Offset:
    """Where a consumer stands in one stream: segment (its first seq), byte, last seq."""

    segment: int = 0
    position: int = 0
    seq: int = -1

    def to_json(self) -> dict[str, int]:
        return {"segment": self.segment, "position": self.position, "seq": self.seq}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Offset:
        return cls(int(data["segment"]), int(data["position"]), int(data["seq"]))


@dataclass(frozen=True, slots=True)
class Corruption:
    """A fault that loses events (a skipped line, missing seqs), located for the operator."""

    stream: str
    segment: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"stream {self.stream!r} segment {self.segment} byte {self.offset}: {self.reason}"


@dataclass(slots=True)
class Batch:
    """Events of one stream in seq order, and the offset to resume from after them.

    ``restarted``: the stream was deleted and created again behind the offset read from,
    and these events start it again at its first seq (a new epoch); a consumer that
    keeps the last seq it took from the stream starts that over too. ``drained``: the
    read reached the end of the active segment (no more to read until it grows).
    """

    stream: str
    events: list[Event]
    offset: Offset
    corrupt: list[Corruption] = field(default_factory=list)
    restarted: bool = False
    drained: bool = False


class LogReader:
    """Reads the streams under ``<root>/log`` from caller-held offsets."""

    def __init__(
        self,
        root: Path | str,
        *,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        notify: bool = True,
        park_check: float | None = None,
        hints: HintQueue | None = None,
        hint_check: float | None = None,
    ) -> None:
        """``notify``: use change notification while following (else polling only);
        ``park_check``: seconds between checks of a parked stream (default: 60 s with
        notification, 10 s without); ``hints``: which streams a writer in this process
        grew (``waddle.eventlog.watch.Hints``), so that ``follow`` reads those streams
        only when they grew, and each of them otherwise every ``hint_check`` seconds
        (default 10 s)."""
        self.root = Path(root)
        self.log_dir = log_dir(self.root)
        self.batch_bytes = batch_bytes
        self.notify = notify
        self.park_check = park_check
        self.hints = hints
        self.hint_check = hint_check
        self._log_dir = str(self.log_dir)
        self._parking: Parking | None = None
        self._follower: int | None = None
        # Set by a stop signal's handler too (``StopEvent.wakes``), on the thread that
        # waits on it: an event whose ``set`` takes no lock, or the first signal hangs.
        self._wake = StopEvent()
        # Each stream's folder key, its segments listed then, and since when (monotonic)
        # that key has been seen; None once ``settled`` vouches for the listing.
        self._listed: dict[str, tuple[_Key, list[int], float | None]] = {}

    def streams(self) -> list[str]:
        """The stream ids present now (folders with a valid id), sorted."""
        try:
            with os.scandir(self.log_dir) as entries:
                return sorted(e.name for e in entries if is_valid_id(e.name) and e.is_dir())
        except FileNotFoundError:
            return []

    def read(self, stream: str, offset: Offset = Offset()) -> Batch:
        """The next batch of ``stream`` after ``offset`` (possibly empty).

        Crosses into the next segment when the current one is sealed and exhausted; when
        the offset's segment was deleted, continues at the next one (reporting the seqs
        lost with it, when the offset's seq says which). When the log no longer reaches
        the offset (its segment is gone and no later one exists, the segment is shorter,
        or the offset is not at the start of a line), the stream was deleted and created
        again behind it: that is reported, and the stream is read from its start.
        """
        stream_dir = os.path.join(self._log_dir, stream)  # no ``Path`` per stream and read
        segments, key = self._segments(stream, stream_dir)
        scan = _Scan(stream, stream_dir, segments, offset)
        if segments and offset.segment > segments[-1]:
            offset = scan.restart(offset)
        fresh: list[dict[str, Any]] = []
        drained = True
        while segments:
            if offset.segment not in segments:
                offset = scan.enter(next(s for s in segments if s > offset.segment), offset)
            sealed = offset.segment != segments[-1]
            name = segment_name(offset.segment)
            path = os.path.join(stream_dir, name)
            chunk, at_end, fits = self._read_chunk(stream, path, offset.position, key)
            drained = at_end and not sealed
            if not fits:
                offset = scan.restart(offset)
                continue
            events, used, bad = decode(chunk, offset.position)
            after = segments[segments.index(offset.segment) + 1] if sealed and at_end else None
            events, used = scan.check(
                name, events, bad, chunk, offset.position, used, after, at_end, sealed
            )
            if used == 0 and len(chunk) > MAX_LINE_BYTES:
                used = _skip_line(chunk)
                scan.skip(name, offset.position, "line longer than the limit")
            if sealed and at_end and used < len(chunk):
                scan.skip(name, offset.position + used, "torn line")
                used = len(chunk)
            fresh = _above(events, offset.seq)
            last = fresh[-1]["seq"] if fresh else offset.seq
            offset = Offset(offset.segment, offset.position + used, last)
            if fresh or scan.corrupt or not (sealed and at_end):
                break
            offset = scan.enter(segments[segments.index(offset.segment) + 1], offset)
        for item in scan.corrupt:
            logger.warning("waddle: log fault in %s", item)
        # The lines passed ``decode``'s check of the envelope: they are events from here on.
        taken = cast("list[Event]", fresh)
        return Batch(stream, taken, offset, scan.corrupt, scan.restarted, drained)

    def _segments(self, stream: str, stream_dir: str) -> tuple[list[int], _Key | None]:
        """``list_segments``, listed again only when the stream's folder changed: a
        segment added (rotation) or deleted, or the stream created again (a new inode).
        Also the folder's key (inode, mtime) when it vouches for the listing, else None.

        A folder whose mtime is not yet ``settled`` is listed every time: a second change
        within the same clock tick would leave its mtime as it was.
        """
        try:
            folder = os.stat(stream_dir)
        except FileNotFoundError:
            self._listed.pop(stream, None)
            return [], None
        key = (folder.st_ino, folder.st_mtime_ns)
        listed = self._listed.get(stream)
        if listed is not None and listed[0] == key:
            if listed[2] is None:
                return listed[1], key  # most reads: no clock read, no listing
            since = listed[2]
        else:
            since = time.monotonic()
        segments = list_segments(Path(stream_dir))
        if settled(folder.st_mtime_ns, time.monotonic() - since):
            self._listed[stream] = (key, segments, None)
            return segments, key
        self._listed[stream] = (key, segments, since)
        return segments, None

    def _read_chunk(
        self, stream: str, path: str, position: int, key: _Key | None
    ) -> tuple[bytes, bool, bool]:
        """Bytes from ``position``: a batch's worth, more until it holds two lines (a long
        line is read whole, and so is the line that tells what a seq jump before it is).

        Also says whether the read reached the end of the file, and whether ``position``
        fits the file (``_fits``). Inside ``follow`` the segment stays open between reads
        while the stream's folder vouches for it (``key``, ``OpenSegments``).
        """
        parking = self._parking
        try:
            if parking is None or threading.get_ident() != self._follower:
                fd, kept = os.open(path, os.O_RDONLY | os.O_CLOEXEC), False
            else:
                fd, kept = parking.files.open(stream, path, key)
        except FileNotFoundError:
            return b"", True, True
        try:
            return _read_at(fd, position, self.batch_bytes)
        finally:
            if not kept:
                os.close(fd)

    def poll(self, offsets: Mapping[str, Offset]) -> list[Batch]:
        """One non-empty batch per stream that has news (new streams start at the start).

        Inside ``follow`` parked streams are left out until they change; a ``poll`` of
        its own reads every stream.
        """
        parking = self._parking
        batches = []
        for stream in self.streams() if parking is None else parking.due():
            offset = offsets.get(stream, Offset())
            stamp = None if parking is None else parking.before(stream, offset)
            batch = self.read(stream, offset)
            if batch.events or batch.corrupt or batch.offset != offset:
                batches.append(batch)
            if parking is not None:
                parking.after(batch, offset, stamp)
        return batches

    def follow(
        self,
        offsets: Mapping[str, Offset],
        stop: threading.Event,
        interval: float = DEFAULT_POLL_INTERVAL,
    ) -> Iterator[list[Batch]]:
        """Poll until ``stop`` is set, yielding each round's batches; the one tail loop.

        Offsets advance as batches are yielded; a caller that must not lose events on a
        crash persists ``batch.offset`` itself after it has stored the events. It sleeps
        only after a round that found nothing, so a backlog is read without pauses, and
        a caller sees "caught up" as the moment its generator is about to wait on
        ``stop``: consumers commit there, and ``--once`` stops there.

        The sleep is ``interval`` (waiting on ``stop``) while a stream is live or no
        change notification comes. With every stream parked or covered by hints and the
        watcher up (``Parking.quiet``), it waits until a notification, a hint, a stop or
        ``wake`` comes (``IDLE_WAIT_S`` at most), and the next round still begins no
        sooner than ``interval`` after the last: an idle folder costs a wakeup a second,
        not twenty, and news is read as soon as before. A ``stop`` that is a
        ``waddle.signals.StopEvent`` ends that wait when set; a plain ``threading.Event``
        may take up to ``IDLE_WAIT_S`` to be seen, unless the caller calls ``wake``.
        """
        current = dict(offsets)
        self._parking = parking = Parking(self)
        self._follower = threading.get_ident()
        unhint = None if self.hints is None else self.hints.wakes(self._wake)
        unwake = stop.wakes(self._wake) if isinstance(stop, StopEvent) else None
        idle = False
        try:
            while not stop.is_set():
                if idle and self.notify:
                    parking.watch(self._wake)  # once caught up: ``--once`` never starts it
                began = time.monotonic()
                batches = self.poll(current)
                for batch in batches:
                    current[batch.stream] = batch.offset
                if batches:
                    yield batches
                elif self._quiet(parking):
                    self._rest(stop, began + interval)
                else:
                    stop.wait(interval)
                idle = not batches
        finally:
            self._parking = self._follower = None
            parking.close()
            if unhint is not None:
                unhint()
            if unwake is not None:
                unwake()

    def _quiet(self, parking: Parking) -> bool:
        """Whether ``follow`` may wait until woken (``Parking.quiet``): a subclass that
        reads less than every stream may know better."""
        return parking.quiet()

    def wake(self) -> None:
        """Cut ``follow``'s wait short (a ``StopEvent`` stop does it when set)."""
        self._wake.set()

    def _rest(self, stop: threading.Event, until: float) -> None:
        """``follow``'s wait with no stream live: until woken, and ``until`` at least
        (a ``time.monotonic()``), so that news wakes it no more often than polling."""
        stop.wait(0)  # the idle moment, as a wait on ``stop`` marks it for the caller
        if not stop.is_set():
            self._wake.wait(IDLE_WAIT_S)
        self._wake.clear()  # before the round that takes what the wake was for
        rest = until - time.monotonic()
        if rest > 0 and not stop.is_set():
            stop.wait(rest)


def _above(events: list[dict[str, Any]], seq: int) -> list[dict[str, Any]]:
    """The events whose seq rises above ``seq`` and above every seq before it.

    Drops what was taken already and duplicates written twice; a chunk with neither
    (nearly all of them) is returned as it is after one C-level comparison of its seqs.
    """
    seqs = [seq, *map(_SEQ, events)]
    if all(map(operator.lt, seqs, seqs[1:])):
        return events
    kept = []
    for event in events:
        if event["seq"] > seq:
            kept.append(event)
            seq = event["seq"]
    return kept


def _skip_line(chunk: bytes) -> int:
    """Bytes through the end of an over-long line, or the whole chunk if it has no end."""
    end = chunk.find(b"\n")
    return len(chunk) if end < 0 else end + 1


def _consecutive(seqs: list[int]) -> bool:
    """Whether ``seqs`` count up by one (C-level passes: the common chunk)."""
    return seqs[-1] - seqs[0] == len(seqs) - 1 and all(map(operator.lt, seqs, seqs[1:]))


def _line_starts(chunk: bytes, used: int, base: int) -> list[int]:
    """Where each non-empty line of ``chunk[:used]`` starts, counted from ``base``: the
    lines ``decode`` turned into events or bad lines, in file order."""
    starts = []
    at = 0
    while at < used:
        end = chunk.index(b"\n", at)
        if end > at:
            starts.append(base + at)
        at = end + 1
    return starts


def _lines(chunk: bytes) -> int:
    """How many complete lines ``chunk`` holds, counting no further than two."""
    first = chunk.find(b"\n")
    return 0 if first < 0 else 1 if chunk.find(b"\n", first + 1) < 0 else 2


def _read_at(fd: int, position: int, size: int) -> tuple[bytes, bool, bool]:
    """``_read_chunk`` of an open segment: the byte before ``position`` comes with the
    first read, so checking that the offset fits costs no extra call in the common case.
    The first read asks for ``_FIRST_READ`` bytes, the rest only if those came whole: a
    live stream's news is small, and a 1 MiB buffer per read cost 27 µs to allocate."""
    first = min(size, _FIRST_READ)
    if position:
        data = os.pread(fd, first + 1, position - 1)
        lead, chunk = data[:1], data[1:]
        fits = lead == b"\n" or _fits(fd, position, lead)
    else:
        chunk, fits = os.pread(fd, first, 0), True
    if len(chunk) == first < size:
        chunk += os.pread(fd, size - first, position + first)
    while len(chunk) == size and _lines(chunk) < 2 and size <= MAX_LINE_BYTES:
        more = os.pread(fd, size, position + len(chunk))
        chunk += more
        size *= 2
        if not more:
            break
    at_end = len(chunk) < size or not os.pread(fd, 1, position + len(chunk))
    return chunk, at_end, fits


def _fits(fd: int, position: int, lead: bytes) -> bool:
    """Whether ``position`` (after the byte ``lead``, not a newline) is a place this
    reader leaves offsets at: the end of the file (after a sealed segment's torn line),
    or inside an over-long line. Anywhere else (past the end, inside a line) the file was
    replaced."""
    if not lead:
        return False
    if os.fstat(fd).st_size == position:
        return True
    with os.fdopen(fd, "rb", closefd=False) as handle:
        return line_start(handle, position) is None


class _Scan:
    """One ``read`` of a stream: what seq the next line should carry, and what was found.

    ``expected`` is learned from the file as it is read: a segment's name at its start,
    then each line's seq + 1. Where it comes from the caller's offset instead (reading
    from the middle of a segment), it is checked against the line before the offset
    when the next line disagrees: a caller may move an offset without reading (the
    broadcaster does), so only the file says what is missing.
    """

    def __init__(self, stream: str, stream_dir: str, segments: list[int], offset: Offset) -> None:
        self.stream = stream
        self.segments = segments
        self.corrupt: list[Corruption] = []
        self.restarted = False
        self.expected: int | None = offset.seq + 1 if offset.seq >= 0 else None
        self.stream_dir = stream_dir
        self.verify: Offset | None = None  # the line before it is read only if needed
        if offset.segment in segments:
            if offset.position:
                self.verify = offset
            else:
                self.expected = offset.segment

    def skip(self, segment: str, offset: int, reason: str) -> None:
        """Report a skipped line: what seq follows it is unknown."""
        self.report(segment, offset, reason)
        self.expected = self.verify = None

    def report(self, segment: str, offset: int, reason: str) -> None:
        self.corrupt.append(Corruption(self.stream, segment, offset, reason))

    def restart(self, offset: Offset) -> Offset:
        """Report that the log no longer reaches ``offset``; read from the start again."""
        self.report(
            segment_name(offset.segment),
            offset.position,
            f"the log no longer reaches this offset (after seq {offset.seq}): the stream "
            "was deleted and created again, so it is read from its start as a new "
            "stream; give each run its own id (init(id=...), WADDLE_RUN_ID) to keep runs "
            "apart",
        )
        self.restarted = True
        self.expected, self.verify = self.segments[0], None
        return Offset(self.segments[0])

    def enter(self, first: int, offset: Offset) -> Offset:
        """Move to the start of segment ``first``, reporting seqs that no segment holds."""
        expected = self._settle(first)
        if expected is not None and first > expected:
            self.report(
                segment_name(first),
                0,
                f"events {expected} to {first - 1} are missing: no segment holds them "
                "(a segment was deleted before this reader took them)",
            )
        self.expected, self.verify = first, None
        return Offset(first, 0, offset.seq)

    def check(
        self,
        segment: str,
        events: list[dict[str, Any]],
        bad: list[BadLine],
        chunk: bytes,
        base: int,
        used: int,
        after: int | None,
        at_end: bool,
        sealed: bool,
    ) -> tuple[list[dict[str, Any]], int]:
        """The events of a chunk whose seqs follow on; reports what does not.

        ``after`` is the seq that should follow the chunk, when known (the next segment's
        name, at the end of a sealed one); ``at_end``: the chunk reaches the end of the
        file. Returns the events to keep and the bytes used: fewer than given when
        the last line waits for the next one.
        """
        for line in bad:
            self.report(segment, line.offset, line.reason)
        if not events:
            if bad:
                self.expected = self.verify = None
            return events, used
        seqs = list(map(_SEQ, events))
        expected = self._settle(seqs[0])
        if not bad and expected in (None, seqs[0]) and _consecutive(seqs):
            self.expected = seqs[-1] + 1
            return events, used
        # The last line may wait when reading can go on from it: a later read sees more
        # of the file (progress made first), or the active segment's writer adds to it.
        live = at_end and not sealed
        waits = live or not at_end
        return self._judge(segment, events, bad, chunk, base, used, after, live, waits)

    def _judge(
        self,
        segment: str,
        events: list[dict[str, Any]],
        bad: list[BadLine],
        chunk: bytes,
        base: int,
        used: int,
        after: int | None,
        live: bool,
        waits: bool,
    ) -> tuple[list[dict[str, Any]], int]:
        """``check`` line by line, for a chunk whose seqs do not simply follow on.

        A line whose seq jumps ahead is judged by the line after it: when that one goes
        on from before the jump, the jump is a corrupt seq; else events are missing. The
        chunk's last line, with nothing after it yet, waits if ``waits`` and the read
        would still move (or the writer may add the line: ``live``).
        """
        skipped = {line.offset for line in bad}
        starts = iter(_line_starts(chunk, used, base))
        kept: list[dict[str, Any]] = []
        start = base
        for index, event in enumerate(events):
            start = next(starts)
            while start in skipped:  # a bad line: the seq after it is anyone's guess
                self.expected = None
                start = next(starts)
            seq, expected = event["seq"], self.expected
            if expected is not None and seq > expected:
                later = events[index + 1]["seq"] if index + 1 < len(events) else after
                last_line = chunk.index(b"\n", start - base) + 1 == used
                if later is None and last_line and waits and (start > base or live):
                    if start > base and live:  # reported once: by the read that reaches it
                        self.report(
                            segment,
                            start,
                            f"seq {seq} jumps ahead of seq {expected - 1}; the line waits "
                            "for the next one to tell missing events from a corrupt seq",
                        )
                    return kept, start - base
                if later is not None and expected <= later < seq:
                    self.report(
                        segment,
                        start,
                        f"seq {seq} breaks the order between seq {expected - 1} and seq "
                        f"{later}: its seq is corrupt, and the line is skipped",
                    )
                    self.expected = later
                    continue
                self.report(segment, start, f"events {expected} to {seq - 1} are missing")
            if expected is None or seq >= expected:
                self.expected = seq + 1
            kept.append(event)
        if any(offset > start for offset in skipped):
            self.expected = None
        return kept, used

    def _settle(self, seq: int) -> int | None:
        """The seq expected next: checked against the file when it came from the
        caller's offset and ``seq``, the next one in the file, disagrees with it."""
        if self.verify is not None and seq != self.expected:
            path = os.path.join(self.stream_dir, segment_name(self.verify.segment))
            before = seq_before(path, self.verify.position)
            self.expected = None if before is None else before + 1
        self.verify = None
        return self.expected

"""The tailing reader: every consumer reads the log through this module.

What it assumes of writers: one writer per stream; lines are appended whole or rolled
back (a torn final line is only ever an unfinished write); a segment is sealed once a
later segment of its stream exists and never grows again.

What it guarantees: events of a stream come in file order, each event at most once per
``Offset`` (events whose seq is not above ``Offset.seq`` are skipped, so a replay is
harmless); it never reads past the last ``\\n`` of the active segment; a complete line
that is not a valid event is reported (stream, segment, byte offset) and skipped; a
torn line at the end of a *sealed* segment is reported and skipped too. Polling is the
only waiting mechanism, so it works the same on local and network filesystems.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from waddle.eventlog.record import decode
from waddle.eventlog.segment import list_segments, log_dir, segment_name
from waddle.ids import is_valid_id

_SEQ = operator.itemgetter("seq")

logger = logging.getLogger("waddle.eventlog")

DEFAULT_BATCH_BYTES = 1 << 20
MAX_LINE_BYTES = 64 << 20
DEFAULT_POLL_INTERVAL = 0.05


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
    """A skipped line, located for the operator."""

    stream: str
    segment: str
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"stream {self.stream!r} segment {self.segment} byte {self.offset}: {self.reason}"


@dataclass(slots=True)
class Batch:
    """Events of one stream in seq order, and the offset to resume from after them."""

    stream: str
    events: list[dict[str, Any]]
    offset: Offset
    corrupt: list[Corruption] = field(default_factory=list)


class LogReader:
    """Reads the streams under ``<root>/log`` from caller-held offsets."""

    def __init__(self, root: Path | str, *, batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        self.root = Path(root)
        self.log_dir = log_dir(self.root)
        self.batch_bytes = batch_bytes

    def streams(self) -> list[str]:
        """The stream ids present now (folders with a valid id), sorted."""
        try:
            names = os.listdir(self.log_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_valid_id(n) and (self.log_dir / n).is_dir())

    def read(self, stream: str, offset: Offset = Offset()) -> Batch:
        """The next batch of ``stream`` after ``offset`` (possibly empty).

        Crosses into the next segment when the current one is sealed and exhausted; when
        the offset's segment was deleted by retention, continues at the next one.
        """
        stream_dir = self.log_dir / stream
        segments = list_segments(stream_dir)
        corrupt: list[Corruption] = []
        fresh: list[dict[str, Any]] = []
        while segments:
            offset = _align(offset, segments)
            sealed = offset.segment != segments[-1]
            name = segment_name(offset.segment)
            chunk, at_end = self._read_chunk(stream_dir / name, offset.position)
            events, used, bad = decode(chunk, offset.position)
            corrupt += [Corruption(stream, name, b.offset, b.reason) for b in bad]
            if used == 0 and len(chunk) > MAX_LINE_BYTES:
                used = _skip_line(chunk)
                corrupt.append(
                    Corruption(stream, name, offset.position, "line longer than the limit")
                )
            if sealed and at_end and used < len(chunk):
                corrupt.append(Corruption(stream, name, offset.position + used, "torn line"))
                used = len(chunk)
            fresh = _above(events, offset.seq)
            last = fresh[-1]["seq"] if fresh else offset.seq
            offset = Offset(offset.segment, offset.position + used, last)
            if fresh or corrupt or not (sealed and at_end):
                break
            offset = Offset(segments[segments.index(offset.segment) + 1], 0, offset.seq)
        for item in corrupt:
            logger.warning("waddle: skipped a bad line in %s", item)
        return Batch(stream, fresh, offset, corrupt)

    def _read_chunk(self, path: Path, position: int) -> tuple[bytes, bool]:
        """Bytes from ``position``: a batch's worth, more if one line is longer than that.

        Also says whether the read reached the end of the file.
        """
        size = self.batch_bytes
        try:
            with open(path, "rb") as handle:
                handle.seek(position)
                chunk = handle.read(size)
                while len(chunk) == size and b"\n" not in chunk and size <= MAX_LINE_BYTES:
                    more = handle.read(size)
                    chunk += more
                    size *= 2
                    if not more:
                        break
                at_end = handle.read(1) == b""
        except FileNotFoundError:
            return b"", True
        return chunk, at_end

    def poll(self, offsets: Mapping[str, Offset]) -> list[Batch]:
        """One non-empty batch per stream that has news (new streams start at the start)."""
        batches = []
        for stream in self.streams():
            batch = self.read(stream, offsets.get(stream, Offset()))
            if batch.events or batch.corrupt or batch.offset != offsets.get(stream, Offset()):
                batches.append(batch)
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
        (waits on ``stop`` for ``interval``) only after a round that found nothing, so a
        backlog is read without pauses, and a caller sees "caught up" as the moment its
        generator is about to wait: consumers commit there, and ``--once`` stops there.
        """
        current = dict(offsets)
        while not stop.is_set():
            batches = self.poll(current)
            for batch in batches:
                current[batch.stream] = batch.offset
            if batches:
                yield batches
            else:
                stop.wait(interval)


def _align(offset: Offset, segments: list[int]) -> Offset:
    """Move an offset whose segment no longer exists (or never did) to the next one."""
    if offset.segment in segments:
        return offset
    later = [s for s in segments if s > offset.segment]
    return replace(offset, segment=later[0] if later else segments[-1], position=0)


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

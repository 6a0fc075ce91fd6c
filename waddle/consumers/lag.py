"""How far a consumer is behind the log, per stream: events and bytes.

Read-only and approximate by design: the log keeps growing while it is measured, so the
figures are a lower bound a moment later. Events behind come from seqs (the last
complete event of the stream against the consumer's last seq), bytes behind from
segment sizes (everything after the consumer's byte position).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import orjson

from waddle.eventlog.reader import Offset
from waddle.eventlog.segment import list_segments, log_dir, segment_name

_TAIL_BLOCK = 64 * 1024


@dataclass(frozen=True)
class Lag:
    """What a consumer has still to take from one stream."""

    events: int
    bytes: int


def segment_sizes(stream_dir: Path) -> dict[int, int]:
    """Size of each segment of a stream, by first seq (segments that vanish are skipped)."""
    sizes = {}
    for first in list_segments(stream_dir):
        try:
            sizes[first] = os.stat(stream_dir / segment_name(first)).st_size
        except FileNotFoundError:
            continue
    return sizes


def last_seq(stream_dir: Path) -> int:
    """The seq of the last complete, parseable event of a stream; -1 when it has none."""
    for first in reversed(list_segments(stream_dir)):
        seq = _last_seq_in(stream_dir / segment_name(first))
        if seq is not None:
            return seq
    return -1


def _last_seq_in(path: Path) -> int | None:
    """Read backwards from the end of a segment to its last event that parses."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - _TAIL_BLOCK)
                handle.seek(start)
                tail = handle.read(end - start) + tail
                end = start
                lines = tail[: tail.rfind(b"\n") + 1].split(b"\n")
                # the first piece may be the cut-off end of an earlier line
                complete = lines[1:] if start > 0 else lines
                for line in reversed(complete):
                    seq = _seq_of(line)
                    if seq is not None:
                        return seq
    except FileNotFoundError:
        return None
    return None


def _seq_of(line: bytes) -> int | None:
    if not line:
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    seq = event.get("seq") if type(event) is dict else None
    return seq if type(seq) is int else None


def bytes_behind(sizes: Mapping[int, int], offset: Offset) -> int:
    """Bytes of the segments in ``sizes`` that lie after ``offset``."""
    total = 0
    for first, size in sizes.items():
        if first > offset.segment:
            total += size
        elif first == offset.segment:
            total += max(size - offset.position, 0)
    return total


def lag(root: Path | str, offsets: Mapping[str, Offset]) -> dict[str, Lag]:
    """Per stream present in the log, what a consumer at ``offsets`` has still to take."""
    base = log_dir(Path(root))
    try:
        streams = sorted(name for name in os.listdir(base) if (base / name).is_dir())
    except FileNotFoundError:
        return {}
    found = {}
    for stream in streams:
        offset = offsets.get(stream, Offset())
        behind = max(last_seq(base / stream) - offset.seq, 0)
        found[stream] = Lag(behind, bytes_behind(segment_sizes(base / stream), offset))
    return found

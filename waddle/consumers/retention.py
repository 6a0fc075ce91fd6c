"""Consumer-aware retention: delete the sealed segments nobody needs any more.

A segment may go only when it is sealed (a later segment of its stream exists, so it
never grows again) and every registered durable consumer has committed past it: its
published offset for that stream lies in a later segment, or at the very end of this
one. A registered consumer that is not running holds the segments it has not taken,
and a stream it has never read is held whole. With no registered consumer at all,
nothing is deleted: then nothing says the log was ever read.

Guarantees: the active segment of a stream is never deleted; published offsets lag the
consumers' own stores, never lead them, so a stale state file only keeps more; a
consumer that registers while ``collect`` runs may find older segments gone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from waddle.consumers.lag import segment_sizes
from waddle.consumers.registry import Registration, StateStore
from waddle.eventlog.reader import Offset
from waddle.eventlog.segment import log_dir, segment_name
from waddle.ids import is_valid_id


@dataclass(frozen=True)
class Freed:
    """A deleted (or, in a dry run, deletable) segment."""

    stream: str
    path: Path
    size: int


@dataclass
class Collection:
    """What a retention pass did, and why it stopped where it did."""

    freed: list[Freed] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def bytes(self) -> int:
        return sum(item.size for item in self.freed)


def passed(offset: Offset | None, first: int, size: int) -> bool:
    """Whether a consumer at ``offset`` has taken all of the segment ``first``."""
    if offset is None:
        return False
    return offset.segment > first or (offset.segment == first and offset.position >= size)


def collect(root: Path | str, *, dry_run: bool = False) -> Collection:
    """Delete every sealed segment that all registered durable consumers are past."""
    root = Path(root)
    registrations = StateStore(root).registered()
    result = Collection(consumers=[r.name for r in registrations])
    if not registrations:
        result.note = (
            "no registered consumer, so nothing is known to be consumed; nothing deleted "
            "(start one, e.g. `waddle-consume --once`, then run gc again)"
        )
        return result
    base = log_dir(root)
    try:
        streams = sorted(n for n in os.listdir(base) if is_valid_id(n) and (base / n).is_dir())
    except FileNotFoundError:
        return result
    for stream in streams:
        result.freed += _collect_stream(base / stream, registrations, dry_run)
    return result


def _collect_stream(
    stream_dir: Path, registrations: list[Registration], dry_run: bool
) -> list[Freed]:
    sizes = segment_sizes(stream_dir)
    sealed = list(sizes)[:-1]
    freed = []
    for first in sealed:
        size = sizes[first]
        if not all(passed(r.offsets.get(stream_dir.name), first, size) for r in registrations):
            break
        path = stream_dir / segment_name(first)
        if not dry_run:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
        freed.append(Freed(stream_dir.name, path, size))
    return freed

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

Blobs (``<root>/blobs``, docs/media.md) go after the segments: a blob is deleted only
when no retained segment names it. A segment a registered consumer still needs is
retained, so a blob such a consumer still needs is kept too. "Names" is conservative:
any quoted 64-hex-digit string in a retained segment, or in an artifact index
(``<root>/artifacts/*.json``, which keeps every logged version downloadable), keeps the
blob of that name, and a kept blob that is JSON (a table, a manifest) keeps the blobs it
names in turn. Cost: every retained segment is read once and scanned by a regular
expression (about the speed of reading it), plus each kept JSON blob; nothing is parsed
event by event. Blobs written in the last ``BLOB_GRACE_S`` are kept whatever the scan
found (the event naming a new blob may not be in the log yet), and temp files of
``blobs/tmp`` older than ``TMP_AGE_S`` (writers killed mid-blob) are removed. A producer
that logs, at the very moment gc runs, content whose every earlier event has just been
deleted may find the blob gone under the event: run gc while no run logs such content,
or let the grace period cover it.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from waddle.consumers.lag import segment_sizes
from waddle.consumers.registry import Registration, StateStore
from waddle.eventlog.reader import Offset
from waddle.eventlog.segment import log_dir, segment_name
from waddle.ids import is_valid_id
from waddle.paths import blobs_dir

# What a blob name looks like inside JSON text: a quoted SHA-256 in hex.
_NAMED = re.compile(rb'"([0-9a-f]{64})"')
BLOB_GRACE_S = 3600.0
TMP_AGE_S = 24 * 3600.0
_JSON_PEEK = 64


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
    blobs: list[Freed] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def bytes(self) -> int:
        return sum(item.size for item in self.freed)

    @property
    def blob_bytes(self) -> int:
        return sum(item.size for item in self.blobs)


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
    result.blobs = collect_blobs(root, {item.path for item in result.freed}, dry_run=dry_run)
    return result


def _names_in(path: Path) -> set[str]:
    """The blob names a file mentions (empty when it is gone)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return set()
    return {match.decode() for match in _NAMED.findall(data)}


def _is_json(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(_JSON_PEEK).lstrip()[:1] in (b"{", b"[")
    except FileNotFoundError:
        return False


def named_blobs(root: Path, freed: set[Path]) -> set[str]:
    """Every blob a retained segment or an artifact index names, directly or through
    a JSON blob (a table's image cells, a manifest's files); ``freed`` are left out."""
    named: set[str] = set()
    base = log_dir(root)
    for segment in sorted(base.glob("*/*.ndjson")) if base.is_dir() else []:
        if segment not in freed:
            named |= _names_in(segment)
    for index in sorted((root / "artifacts").glob("*.json")):
        named |= _names_in(index)
    store = blobs_dir(root)
    pending = list(named)
    while pending:
        name = pending.pop()
        path = store / name[:2] / name
        if _is_json(path):
            inner = _names_in(path) - named
            named |= inner
            pending += inner
    return named


def collect_blobs(root: Path, freed: set[Path], *, dry_run: bool = False) -> list[Freed]:
    """Delete the blobs no retained segment names (see the module's docstring)."""
    store = blobs_dir(root)
    if not store.is_dir():
        return []
    began = time.time()
    named = named_blobs(root, freed)
    gone: list[Freed] = []
    for path in sorted(store.glob("??/*")):
        if path.name in named:
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_mtime > began - BLOB_GRACE_S or not path.is_file():
            continue
        if not dry_run:
            path.unlink(missing_ok=True)
        gone.append(Freed("blobs", path, stat.st_size))
    for path in sorted((store / "tmp").glob("*")):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_mtime < began - TMP_AGE_S and path.is_file():
            if not dry_run:
                path.unlink(missing_ok=True)
            gone.append(Freed("blobs", path, stat.st_size))
    return gone


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

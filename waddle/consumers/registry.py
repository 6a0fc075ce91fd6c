"""The consumer registry: ``<dir>/state/<name>.json`` and the one-instance lock.

A durable consumer is *registered* from its first start until ``waddle consumers rm
NAME`` removes its file. The registry holds the offsets the consumer has committed
(published after the commit, so it may lag behind the consumer's own store but is never
ahead of it); retention reads it to know which segments are still needed.

On disk: a snapshot, ``<name>.json`` (every stream's offset), and a journal beside it,
``<name>.journal``, one line per publish holding only the offsets that changed since
the one before (``null``: a stream dropped). A publish appends one line, so its cost
follows the streams that moved, not every stream the consumer ever saw; the journal is
folded into a new snapshot when it outgrows the snapshot, at a publisher's first
publish and when its consumer stops cleanly (``settle``). The snapshot names the
journal generation that continues it, and the journal's first line names its own, so a
journal left over from before a snapshot is never applied to it. A generation is drawn
at random, not counted: a counter starts again when the snapshot is missing (a
registration removed, a snapshot deleted by hand), and a journal left behind would then
name the new snapshot's generation and move its offsets ahead of its consumer. For the
same reason ``remove`` deletes the journal before the snapshot, and ``lock`` deletes a
journal whose snapshot is missing.

Guarantees: a snapshot is replaced atomically (written to a temporary name, fsynced,
renamed) and a journal line counts only when it is whole (ends with ``\\n`` and
parses), so after a SIGKILL at any point a reader sees the offsets of some completed
publish, never a torn one; a publish that fails (a full disk) raises the ``OSError``
and leaves what was published before readable. One process at a time publishes a given
consumer name: ``lock`` holds an advisory lock on ``state/<name>.lock`` that dies with
the process. Snapshots written before the journal existed (no generation) are read as
they are and replaced at the first publish.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from waddle.errors import ConsumerLockedError, PermanentError
from waddle.eventlog.reader import Offset
from waddle.ids import check_id, is_valid_id
from waddle.paths import state_dir

_SUFFIX = ".json"
_JOURNAL = ".journal"
_MIN_JOURNAL_BYTES = 64 << 10


def destination_name(kind: str, destination: Path | str, default: Path | str) -> str:
    """The registration name of a ``kind`` consumer writing to ``destination``.

    Registrations must be unique per destination: two stores of one folder under one
    name would publish over each other's offsets, and retention would delete segments
    one of them has not read. The default destination keeps the plain ``kind`` (so
    existing folders keep their registration); any other is ``kind-<8 hex>``, the start
    of the SHA-256 of its resolved path: the same file always gets the same name.
    """
    resolved = Path(destination).resolve()
    if resolved == Path(default).resolve():
        return kind
    return f"{kind}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Registration:
    """A registered durable consumer as its state files describe it."""

    name: str
    offsets: dict[str, Offset] = field(default_factory=dict)
    updated_at: float = 0.0


@dataclass
class _Journal:
    """What this process published last under one name, and the journal it appends to."""

    generation: int
    snapshot: tuple[int, int]  # the snapshot's inode and mtime: replaced by another?
    published: dict[str, Offset]
    limit: int
    size: int


class StateStore:
    """Reads and writes the registry of one Waddle folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.dir = state_dir(self.root)
        self._journals: dict[str, _Journal] = {}

    def path(self, name: str) -> Path:
        return self.dir / f"{check_id(name, 'consumer name')}{_SUFFIX}"

    def load(self, name: str) -> dict[str, Offset]:
        """The published offsets of ``name``; empty when it is not registered."""
        registration = self._read(self.path(name))
        return registration.offsets if registration else {}

    def publish(self, name: str, offsets: dict[str, Offset]) -> None:
        """Register ``name`` (if new) with these committed offsets: a journal line of
        those that changed since this store's last publish, or a new snapshot."""
        journal = self._journals.get(name)
        if journal is None or not self._current(name, journal):
            self._compact(name, offsets)
            return
        published = journal.published
        was = published.get
        # Identity first, in one comprehension: a consumer hands back the same ``Offset``
        # for a stream that did not move, so only the few that did are compared.
        moved = [stream for stream, offset in offsets.items() if was(stream) is not offset]
        changed: dict[str, dict[str, int] | None] = {
            stream: offsets[stream].to_json() for stream in moved if was(stream) != offsets[stream]
        }
        added = sum(stream not in published for stream in moved)
        gone = [] if len(published) + added == len(offsets) else published.keys() - offsets
        changed.update(dict.fromkeys(gone))
        line = orjson.dumps({"updated_at": time.time(), "offsets": changed}) + b"\n"
        if journal.size + len(line) > journal.limit:
            self._compact(name, offsets)
            return
        path = self._journal_path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException as exc:
            self.release(name)  # the line may be torn: the next publish starts a snapshot
            if isinstance(exc, OSError) and exc.filename is None:  # name the full device
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        journal.size += len(line)
        for stream in gone:
            del published[stream]
        published.update((stream, offsets[stream]) for stream in changed if stream in offsets)

    def settle(self, name: str) -> None:
        """Fold ``name``'s journal into its snapshot and stop appending (a clean stop):
        the snapshot alone then holds every offset, as it did before journals."""
        journal = self._journals.get(name)
        if journal is not None and journal.size > len(_header(journal.generation)):
            self._compact(name, dict(journal.published))
        self.release(name)

    def release(self, name: str) -> None:
        """Stop appending to ``name``'s journal (its next publish writes a snapshot)."""
        self._journals.pop(name, None)

    def registered(self) -> list[Registration]:
        """Every registered consumer, by name."""
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        found = []
        for file_name in names:
            name = file_name[: -len(_SUFFIX)]
            if file_name.endswith(_SUFFIX) and is_valid_id(name):
                registration = self._read(self.dir / file_name)
                if registration is not None:
                    found.append(registration)
        return found

    def remove(self, name: str) -> bool:
        """Unregister ``name``; False when it was not registered. Refused while it runs."""
        if not self.path(name).exists():
            return False
        with self.lock(name):
            self.release(name)
            self._journal_path(name).unlink(missing_ok=True)  # first: never an orphan
            try:
                self.path(name).unlink()
            except FileNotFoundError:
                return False
            (self.dir / f"{name}.lock").unlink(missing_ok=True)
        return True

    def is_running(self, name: str) -> bool:
        """Whether a live process holds ``name``'s lock right now."""
        try:
            with self.lock(name):
                return False
        except ConsumerLockedError:
            return True

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold ``name``'s lock for the block; ``ConsumerLockedError`` if another has it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self.dir / f"{check_id(name, 'consumer name')}.lock",
            os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
            0o644,
        )
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConsumerLockedError(
                    f"consumer {name!r} is already running on {self.root} (its lock "
                    f"{self.dir / (name + '.lock')} is held); stop that process first, "
                    "or give this consumer another name"
                ) from None
            for suffix in (_SUFFIX, _JOURNAL):
                for stale in self.dir.glob(f".{name}{suffix}.*.tmp"):
                    stale.unlink(missing_ok=True)  # left by a holder killed mid-write
            if not self.path(name).exists():  # an orphan: no snapshot it continues
                self._journal_path(name).unlink(missing_ok=True)
            yield
        finally:
            os.close(fd)

    def _journal_path(self, name: str) -> Path:
        return self.dir / f"{name}{_JOURNAL}"

    def _current(self, name: str, journal: _Journal) -> bool:
        """Whether the snapshot is still the one this store wrote (one stat)."""
        try:
            found = os.stat(self.path(name))
        except FileNotFoundError:
            return False
        return (found.st_ino, found.st_mtime_ns) == journal.snapshot

    def _compact(self, name: str, offsets: dict[str, Offset]) -> None:
        """Write every offset as a new snapshot, then start its journal afresh."""
        target = self.path(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        generation = int.from_bytes(os.urandom(8), "big")
        self.release(name)
        body = orjson.dumps(
            {
                "name": name,
                "updated_at": time.time(),
                "journal": generation,
                "offsets": {s: offset.to_json() for s, offset in sorted(offsets.items())},
            },
            option=orjson.OPT_INDENT_2,
        )
        _replace(target, body)
        snapshot = os.stat(target)
        header = _header(generation)
        _replace(self._journal_path(name), header)
        self._journals[name] = _Journal(
            generation,
            (snapshot.st_ino, snapshot.st_mtime_ns),
            dict(offsets),
            max(_MIN_JOURNAL_BYTES, len(body)),
            len(header),
        )

    def _read(self, path: Path) -> Registration | None:
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise PermanentError(
                f"consumer state file {path} is not valid JSON ({exc}); remove it with "
                f"`waddle consumers rm {path.stem}` and restart that consumer"
            ) from exc
        offsets = {stream: Offset.from_json(o) for stream, o in data.get("offsets", {}).items()}
        updated_at = data.get("updated_at", 0.0)
        generation = data.get("journal")
        if generation is not None:
            updated_at = _replay(path.with_suffix(_JOURNAL), generation, offsets, updated_at)
        return Registration(data.get("name", path.stem), offsets, updated_at)


def _replay(journal: Path, generation: int, offsets: dict[str, Offset], updated_at: float) -> float:
    """Apply the whole lines of ``journal`` to ``offsets`` if it continues ``generation``;
    the time of the last one applied. A torn last line (a publish killed) is not one."""
    try:
        lines = journal.read_bytes().split(b"\n")[:-1]  # the part after the last \\n: torn
    except FileNotFoundError:
        return updated_at
    try:
        if not lines or orjson.loads(lines[0]).get("journal") != generation:
            return updated_at  # left over from before the snapshot
        for line in lines[1:]:
            entry = orjson.loads(line)
            for stream, offset in entry["offsets"].items():
                if offset is None:
                    offsets.pop(stream, None)
                else:
                    offsets[stream] = Offset.from_json(offset)
            updated_at = entry["updated_at"]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        pass  # a line cut short by a failed write: only ever the last one
    return updated_at


def _header(generation: int) -> bytes:
    """A journal's first line: the snapshot generation it continues."""
    return orjson.dumps({"journal": generation}) + b"\n"


def _replace(target: Path, body: bytes) -> None:
    """Write ``body`` to ``target`` atomically: a reader sees the old file or the new."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)  # a full disk gets its bytes back
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names none
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise

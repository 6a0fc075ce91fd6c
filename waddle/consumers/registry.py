"""The consumer registry: ``<dir>/state/<name>.json`` and the one-instance lock.

A durable consumer is *registered* from its first start until ``waddle consumers rm
NAME`` removes its file. The file holds the offsets the consumer has committed
(published after the commit, so it may lag behind the consumer's own store but is never
ahead of it); retention reads it to know which segments are still needed.

Guarantees: a file is replaced atomically (written to a temporary name, fsynced,
renamed), so a reader sees the old offsets or the new ones, never a torn file; a publish
that fails (a full disk) leaves the old file and raises the ``OSError``. One
process at a time runs a given consumer name: ``lock`` holds an advisory lock on
``state/<name>.lock`` that dies with the process.
"""

from __future__ import annotations

import contextlib
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
    """A registered durable consumer as its state file describes it."""

    name: str
    offsets: dict[str, Offset] = field(default_factory=dict)
    updated_at: float = 0.0


class StateStore:
    """Reads and writes the registry of one Waddle folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.dir = state_dir(self.root)

    def path(self, name: str) -> Path:
        return self.dir / f"{check_id(name, 'consumer name')}{_SUFFIX}"

    def load(self, name: str) -> dict[str, Offset]:
        """The published offsets of ``name``; empty when it is not registered."""
        registration = self._read(self.path(name))
        return registration.offsets if registration else {}

    def publish(self, name: str, offsets: dict[str, Offset]) -> None:
        """Register ``name`` (if new) with these committed offsets, atomically."""
        target = self.path(name)
        self.dir.mkdir(parents=True, exist_ok=True)
        body = {
            "name": name,
            "updated_at": time.time(),
            "offsets": {stream: offset.to_json() for stream, offset in sorted(offsets.items())},
        }
        temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                handle.write(orjson.dumps(body, option=orjson.OPT_INDENT_2))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)  # a full disk gets its bytes back
            raise

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
            for stale in self.dir.glob(f".{name}{_SUFFIX}.*.tmp"):
                stale.unlink(missing_ok=True)  # left by a holder that was killed mid-write
            yield
        finally:
            os.close(fd)

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
        return Registration(data.get("name", path.stem), offsets, data.get("updated_at", 0.0))

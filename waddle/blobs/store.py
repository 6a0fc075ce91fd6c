"""The blob store: files kept once, by content, under ``<root>/blobs/<2 hex>/<sha256>``.

Guarantees: a blob at its final name is complete and holds exactly the bytes its name
hashes to. Every write streams into ``blobs/tmp/`` while hashing (the source is read
once), fsyncs, then renames to the final name; a name that already exists is the same
content, so the temp file is dropped. Writers of the same content race harmlessly. The
directory entry is not fsynced: after a power loss a blob may be missing, never torn (a
reader checks with ``verify``). Used by the producer (media, files, artifacts), the
server (``PUT /blobs``) and retention; it imports nothing above ``waddle.paths``.

Small blobs already in memory (``put_bytes``: a logged image) take a shorter road where
the kernel offers it (Linux ``O_TMPFILE``): the bytes go into an unnamed file in
``blobs/tmp/``, which ``linkat`` then names; a blob already there makes the link fail
(``EEXIST``), so the same content is never written twice under its name and there is no
temp name to rename or clean up: a killed process leaves nothing. Elsewhere it is temp
file + rename. The 256 fan-out folders are made once, by a background thread, when a
store first writes a blob: made one by one on the caller's thread they cost as much as
the first few hundred images.

``sync_each=False`` trades the per-blob fsync (milliseconds on a real disk: twenty times
the cost of encoding a 64x64 PNG) for one ``sync()`` later: the producer's media blobs
are then as durable as the log lines that name them, whose fsync also comes later (at
roll-over and at finish). A process that dies still leaves every renamed blob whole;
only a power loss before ``sync()`` can lose one. Files (``put_file``) always fsync.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from waddle.paths import PathArg, blobs_dir

CHUNK = 1 << 20
TMP_NAME = "tmp"
_HEX = re.compile(r"^[0-9a-f]{64}$")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_serial = itertools.count()  # temp names unique within a process (next() is atomic)
# An unnamed file (O_TMPFILE) is named by linking /proc/self/fd/N: both must exist.
_UNNAMED = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | getattr(os, "O_CLOEXEC", 0)
_UNNAMED_OK = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
# What open(O_TMPFILE) answers on a filesystem (or kernel) without unnamed files
_NO_UNNAMED = frozenset((errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL))
# What linkat of /proc/self/fd/N answers where naming an unnamed file is not allowed
# (a sandbox's /proc, a kernel or filesystem without it); ENOENT once the folder exists
_NO_LINK = frozenset(
    (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOENT)
)
# Blobs larger than this look for a stored copy before writing: writing them twice
# costs more than the look (small ones let the link find the copy)
CHECK_FIRST = 1 << 16
# How many digests a store remembers having stored: content it stored lately (the same
# table logged every step) is looked for (one stat) before a file is made for it again
REMEMBERED = 4096


@dataclass(frozen=True)
class BlobRef:
    """A stored blob: its SHA-256 (hex) and its size in bytes."""

    sha256: str
    size: int


class SourceChanged(OSError):
    """A file disappeared or changed while it was copied into the store; nothing was kept.

    An ``OSError``: for the producer it is I/O trouble (warned about and counted).
    """


class HashMismatch(ValueError):
    """The bytes written do not hash to the name they were sent under; nothing was kept."""

    def __init__(self, expected: str, got: str) -> None:
        self.expected = expected
        self.got = got
        super().__init__(f"blob sent as {expected} hashes to {got}; it was not stored")


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits (a safe path component), else ValueError."""
    if not isinstance(sha256, str) or not _HEX.match(sha256):
        raise ValueError(f"not a SHA-256 in lowercase hex: {sha256!r}")
    return sha256


class BlobStore:
    """The blobs of one Waddle folder."""

    def __init__(self, root: PathArg, sync_each: bool = True) -> None:
        self.dir = blobs_dir(root)
        self.sync_each = sync_each
        self.unsynced = 0  # blobs renamed into place without their fsync
        self._tmp = f"{self.dir}/{TMP_NAME}"
        self._unnamed = _UNNAMED_OK
        self._fanned = False  # the fan-out folders are being made (or were)
        self._stored: set[str] = set()  # digests put lately (at most REMEMBERED)

    def sync(self) -> None:
        """Make the blobs written without their own fsync durable (one ``os.sync``)."""
        if self.unsynced:
            os.sync()
            self.unsynced = 0

    def path(self, sha256: str) -> Path:
        """Where the blob named ``sha256`` lives (whether or not it exists)."""
        check_sha256(sha256)
        return self.dir / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        """The blob for reading; FileNotFoundError when it is not stored."""
        return open(self.path(sha256), "rb")

    def verify(self, sha256: str) -> bool:
        """Whether the blob exists and its bytes hash to its name."""
        try:
            with self.open(sha256) as file:
                digest = hashlib.sha256()
                while chunk := file.read(CHUNK):
                    digest.update(chunk)
                return digest.hexdigest() == sha256
        except FileNotFoundError:
            return False

    def writer(self, sync: bool | None = None) -> BlobWriter:
        """A blob written in pieces (``write``, then ``commit``); see ``BlobWriter``.
        ``sync``: fsync at commit (default: ``sync_each``)."""
        return BlobWriter(self, self.sync_each if sync is None else sync)

    def put_bytes(self, data: bytes) -> BlobRef:
        """Store ``data``; a blob already stored is not written again.

        The producer's path for media: raw ``os`` calls, no existence check for small
        blobs where an unnamed file is linked (the link itself finds a copy) unless this
        store put the same content lately (a table logged at every step: one stat, not
        a file made and dropped), folders made only when missing, so that a small image
        costs about its encoding.
        """
        digest = hashlib.sha256(data).hexdigest()
        final = f"{self.dir}/{digest[:2]}/{digest}"
        if not self._fanned:
            self._fanned = True
            threading.Thread(target=_fan_out, args=(self.dir,), daemon=True).start()
        look = digest in self._stored or len(data) > CHECK_FIRST or not self._unnamed
        if look and os.path.exists(final):  # a stat: a file made for nothing costs more
            return BlobRef(digest, len(data))
        if not (self._unnamed and self._link_unnamed(data, final)):
            self._put_renamed(data, digest, final)
        if len(self._stored) >= REMEMBERED:
            self._stored.clear()
        self._stored.add(digest)
        return BlobRef(digest, len(data))

    def _link_unnamed(self, data: bytes, final: str) -> bool:
        """Write ``data`` into an unnamed file in ``blobs/tmp`` and link it as ``final``.
        False (and renaming from then on) when the filesystem has no unnamed files or
        they cannot be named here."""
        try:
            fd = self._open_unnamed()
        except OSError as exc:
            if exc.errno not in _NO_UNNAMED:
                raise
            self._unnamed = False
            return False
        try:
            _write_all(fd, data)
            if self.sync_each:
                os.fsync(fd)
            try:
                _link_fd(fd, final)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(final), exist_ok=True)
                _link_fd(fd, final)
        except FileExistsError:
            return True  # the same content, stored before
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
            self._unnamed = False
            return False
        finally:
            os.close(fd)
        if not self.sync_each:
            self.unsynced += 1
        return True

    def _open_unnamed(self) -> int:
        """An unnamed file in ``blobs/tmp``, making the folder the first time. Both opens
        are in one ``try`` of the caller, so a filesystem without unnamed files is told
        apart on the first blob of a new store too."""
        try:
            return os.open(self._tmp, _UNNAMED, 0o644)
        except FileNotFoundError:
            os.makedirs(self._tmp, exist_ok=True)
            return os.open(self._tmp, _UNNAMED, 0o644)

    def _put_renamed(self, data: bytes, digest: str, final: str) -> None:
        """Write ``data`` to a temp file in ``blobs/tmp`` and rename it to ``final``."""
        tmp = f"{self._tmp}/{digest}.{os.getpid()}.{next(_serial)}"
        try:
            fd = os.open(tmp, _CREATE, 0o644)
        except FileNotFoundError:
            os.makedirs(self._tmp, exist_ok=True)
            fd = os.open(tmp, _CREATE, 0o644)
        try:
            _write_all(fd, data)
            if self.sync_each:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        self._settle(tmp, final, self.sync_each)

    def _settle(self, tmp: str, final: str, synced: bool) -> None:
        """Rename a complete temp file to its final name (making its fan-out folder when
        missing); a blob already there is the same content, so the temp file goes."""
        if os.path.exists(final):
            os.unlink(tmp)
            return
        try:
            os.rename(tmp, final)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(tmp, final)
        if not synced:
            self.unsynced += 1

    def put_chunks(self, chunks: Iterable[bytes], expected: str | None = None) -> BlobRef:
        """Store a stream of chunks; ``HashMismatch`` when ``expected`` is not their hash."""
        with self.writer() as blob:
            for chunk in chunks:
                blob.write(chunk)
            return blob.commit(expected)

    def put_file(self, path: PathArg) -> BlobRef:
        """Copy a file in, hashing while copying (read once).

        ``SourceChanged`` when the file disappears, is replaced or changes size or
        modification time while it is read: what was stored would not be that file.
        """
        with open(path, "rb") as source, self.writer(sync=True) as blob:
            before = os.fstat(source.fileno())
            while chunk := source.read(CHUNK):
                blob.write(chunk)
            after = os.fstat(source.fileno())
            try:
                now = os.stat(path)
            except FileNotFoundError:
                raise SourceChanged(f"{path} disappeared while it was copied") from None
            seen = {(s.st_ino, s.st_size, s.st_mtime_ns) for s in (before, after, now)}
            if len(seen) > 1 or blob.size != after.st_size:
                raise SourceChanged(f"{path} changed while it was copied")
            return blob.commit()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _link_fd(fd: int, final: str) -> None:
    """Name the unnamed file open as ``fd``. ``src_dir_fd`` makes ``os.link`` call
    ``linkat`` with ``AT_SYMLINK_FOLLOW`` (plain ``link`` would not follow the /proc
    link); the path is absolute, so the descriptor's value is not used."""
    os.link(f"/proc/self/fd/{fd}", final, src_dir_fd=fd)


def _fan_out(folder: Path) -> None:
    """Make the missing ``blobs/<2 hex>`` folders. A writer that needs one first makes it
    itself, so a failure here (a full disk, a folder removed) is left to it."""
    try:
        os.makedirs(folder, exist_ok=True)
        present = set(os.listdir(folder))
        for name in (f"{i:02x}" for i in range(256)):
            if name not in present:
                os.makedirs(os.path.join(folder, name), exist_ok=True)
    except OSError:
        return


class BlobWriter:
    """One blob on its way in: a temp file in ``blobs/tmp/`` hashed as it is written.

    ``commit`` makes it a blob; leaving the ``with`` block without a commit (an error)
    removes the temp file.
    """

    def __init__(self, store: BlobStore, sync: bool = True) -> None:
        self._store = store
        self._sync = sync
        tmp = store.dir / TMP_NAME
        try:
            fd, name = tempfile.mkstemp(dir=tmp, prefix="in-")
        except FileNotFoundError:
            tmp.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=tmp, prefix="in-")
        os.fchmod(fd, 0o644)
        self._tmp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self, expected: str | None = None) -> BlobRef:
        """fsync and rename into place; ``HashMismatch`` (nothing kept) when the content
        does not hash to ``expected``."""
        self._file.flush()
        if self._sync:
            os.fsync(self._file.fileno())
        self._file.close()
        digest = self._hash.hexdigest()
        if expected is not None and expected != digest:
            self._tmp.unlink(missing_ok=True)
            raise HashMismatch(expected, digest)
        try:
            self._store._settle(str(self._tmp), str(self._store.path(digest)), self._sync)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        return BlobRef(digest, self.size)

    def abort(self) -> None:
        """Drop the temp file. Closing flushes what is buffered, which fails again on a
        full disk: that second failure is the one being cleaned up after."""
        with contextlib.suppress(OSError):
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._file.closed:
            self.abort()

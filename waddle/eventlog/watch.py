"""Change notification for the tailing reader: which streams changed, where the OS says
(``Watcher``) and where this process wrote them (``Hints``).

The reader parks finished streams (``waddle.eventlog.reader``): it checks them only
rarely, so a change to one (a resumed run, a stream created again) would wait for that
check. ``Watcher`` shortens the wait where the OS has change notification (inotify,
through ``watchfiles``): it notes which streams' folders changed, the reader checks
those at its next poll, and it wakes a reader that waits because no stream is live.
``Hints`` wake such a reader too. Both are hints only: a lost notification, a network
filesystem that sends none, or no ``watchfiles`` at all leave the reader's rare check
(and its wait, bounded) to find the change, so nothing depends on them but how soon a
parked stream wakes up.

Where notifications would be silently incomplete, there is no watcher (``unwatchable``):
on a network or cluster filesystem (NFS, SMB, Lustre, GPFS, CephFS, ...), on a VM share
(9p, virtiofs) or a FUSE filesystem (sshfs, s3fs, ...), inotify sets up fine but sees
only this machine's writes through this mount, never another machine's (a run written
on a compute node while ``waddle serve`` runs on a login node), and a reader that
trusted it would wait for its idle wait to run out. There the reader polls, as it does
with ``WADDLE_NOTIFY=0`` in the environment (the switch for a filesystem not
recognised).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

logger = logging.getLogger("waddle.eventlog")

# How often watchfiles looks for gathered changes and its stop event (it takes the GIL
# each time) and how long it may gather them (ms): a change is told within about two
# steps (it yields once a step passes with nothing new), and a watcher stops within one.
_STEP_MS = 250
_DEBOUNCE_MS = 500

# Filesystems whose changes made elsewhere inotify does not see (``/proc/self/mountinfo``
# types); any ``fuse.*`` type too but the local ``fuse.fuse-overlayfs`` (rootless
# containers).
_REMOTE_TYPES = frozenset(
    [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "virtiofs",
        "afs",
        "lustre",
        "gpfs",
        "ceph",
        "glusterfs",
        "beegfs",
        "ocfs2",
        "gfs2",
        "orangefs",
        "pvfs2",
        "cvfs",
        "panfs",
    ]
)
_LOCAL_FUSE_TYPES = frozenset({"fuse.fuse-overlayfs"})
MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")
NOTIFY_ENV = "WADDLE_NOTIFY"


def filesystem_type(path: Path, mountinfo: str = MOUNTINFO) -> str | None:
    """The type of the filesystem ``path`` is on: that of the longest mount point above
    its resolved path in ``mountinfo``, the last listed of equal ones (a mount over
    another, e.g. NFS over systemd's autofs trigger, is listed after it); None where that
    cannot be read (not Linux)."""
    target = os.path.realpath(path)
    best, found = -1, None
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                fields = line.split()
                if "-" not in fields[6:]:
                    continue
                # Spaces and the like in a mount point are escaped as octal (\040).
                point = _OCTAL.sub(lambda m: chr(int(m[1], 8)), fields[4])
                inside = target == point or target.startswith(os.path.join(point, ""))
                if inside and len(point) >= best:
                    best, found = len(point), fields[fields.index("-", 6) + 1]
    except (OSError, IndexError, UnicodeError):
        return None
    return found


def unwatchable(log_dir: Path, mountinfo: str = MOUNTINFO) -> str | None:
    """Why change notification must not be trusted for ``log_dir`` (module docstring),
    or None where it may."""
    if os.environ.get(NOTIFY_ENV, "").strip().lower() in {"0", "false", "no", "off"}:
        return f"{NOTIFY_ENV}={os.environ[NOTIFY_ENV]}"
    kind = filesystem_type(log_dir, mountinfo)
    remote = kind in _REMOTE_TYPES or (
        kind is not None and kind.startswith("fuse.") and kind not in _LOCAL_FUSE_TYPES
    )
    return f"a {kind} filesystem, whose changes made elsewhere are not told" if remote else None


class Watcher:
    """Tells the readers of ``log_dir`` in this process which of its streams changed.

    One watching thread per log folder and process (``subscribe``), however many readers
    follow that folder: each reader gets a ``Watch`` of its own, with the streams changed
    since it last looked and an event set when there are some (its ``follow`` may be
    waiting for just that). The thread stops when the last ``Watch`` is closed.
    """

    _shared: dict[str, Watcher] = {}
    _shared_lock = threading.Lock()
    _told: set[str] = set()

    def __init__(self, log_dir: Path, inode: int) -> None:
        self.log_dir = log_dir
        self.inode = inode  # the folder watched: one deleted and made again is another
        self.gone = False  # the folder watched was deleted
        self._key = os.path.abspath(log_dir)
        self._prefix = os.path.join(self._key, "")
        self.active = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watches: list[Watch] = []
        self._thread: threading.Thread | None = None

    @classmethod
    def subscribe(cls, log_dir: Path, wake: threading.Event) -> Watch:
        """A ``Watch`` of ``log_dir`` that sets ``wake`` on news, on the folder's one
        watcher (started by the first subscriber; ``Watch.active`` is False where there
        is no notification to be had: poll only)."""
        key = os.path.abspath(log_dir)
        try:
            inode = os.stat(log_dir).st_ino
        except OSError:
            inode = -1
        with cls._shared_lock:
            watcher = cls._shared.get(key)
            if watcher is None or watcher.inode != inode:
                # The one before (if any) watched a folder since deleted: its own
                # subscribers keep it until they close their watches.
                watcher = cls._shared[key] = Watcher(log_dir, inode)
                watcher.start()
            watch = Watch(watcher, wake)
            with watcher._lock:
                watcher._watches.append(watch)
        return watch

    def _unsubscribe(self, watch: Watch) -> None:
        """Drop ``watch``; the last one out stops the thread (within one step)."""
        with Watcher._shared_lock:
            with self._lock:
                self._watches.remove(watch)
                last = not self._watches
            if last and Watcher._shared.get(self._key) is self:
                del Watcher._shared[self._key]
        if last:
            self.stop()

    def start(self) -> None:
        """Start watching, unless there is no notification to be had or to be trusted
        (``active`` stays False: the readers poll)."""
        try:
            import watchfiles
        except ImportError:
            return
        why = unwatchable(self.log_dir, MOUNTINFO)  # read now: a test may point it elsewhere
        if why is not None:
            self._tell(why)
            return
        self.active = True
        self._thread = threading.Thread(
            target=self._run, args=(watchfiles,), name="waddle-watch", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.active = False

    def _run(self, watchfiles: ModuleType) -> None:
        try:
            for changes in watchfiles.watch(
                self.log_dir,
                watch_filter=None,
                debounce=_DEBOUNCE_MS,
                step=_STEP_MS,
                stop_event=self._stop,
                raise_interrupt=False,
                force_polling=False,
            ):
                self._note(path for _, path in changes)
                gone = watchfiles.Change.deleted
                if any(c == gone and os.path.abspath(p) == self._key for c, p in changes):
                    self.gone = True  # a folder made again there is another: watch that
                    break
        except Exception as exc:  # a hint only: polling goes on without it
            self._tell(str(exc))
        finally:
            self.active = False
            with Watcher._shared_lock:  # a later subscriber gets a new watcher
                if Watcher._shared.get(self._key) is self:
                    del Watcher._shared[self._key]
            with self._lock:  # a reader waiting for news polls again instead
                for watch in self._watches:
                    watch.wake.set()

    def _tell(self, why: str) -> None:
        """Say why the readers of this folder poll, once per folder and process (a reader
        subscribes again now and then, and would say it again each time)."""
        if self._key not in Watcher._told:
            Watcher._told.add(self._key)
            logger.info("waddle: no change notification for %s (%s); polling", self.log_dir, why)

    def _note(self, paths: Iterable[str]) -> None:
        # A host's log changes thousands of times a second: no ``Path`` per change.
        prefix = self._prefix
        names = set()
        for path in paths:
            if path.startswith(prefix):
                names.add(path[len(prefix) :].split(os.sep, 1)[0])
            else:
                parts = Path(path).relative_to(self.log_dir).parts
                if parts:
                    names.add(parts[0])
        with self._lock:
            for watch in self._watches:
                watch.changed |= names
                watch.wake.set()


class Watch:
    """One reader's subscription to its folder's ``Watcher``."""

    def __init__(self, watcher: Watcher, wake: threading.Event) -> None:
        self.watcher = watcher
        self.wake = wake
        self.changed: set[str] = set()

    @property
    def active(self) -> bool:
        """Whether notifications come (else the reader must poll)."""
        return self.watcher.active

    @property
    def ended(self) -> bool:
        """Whether the watching thread ran and ended (an error, the folder deleted); not
        where there was no notification to be had or trusted (nothing to try again)."""
        return self.watcher._thread is not None and not self.watcher.active

    @property
    def gone(self) -> bool:
        """Whether the folder watched was deleted (the watcher has ended)."""
        return self.watcher.gone

    @property
    def inode(self) -> int:
        """The inode of the folder watched (-1: it was gone)."""
        return self.watcher.inode

    def take(self) -> set[str]:
        """The streams changed since the last ``take`` (names of folders under the log)."""
        with self.watcher._lock:
            changed, self.changed = self.changed, set()
        return changed

    def close(self) -> None:
        self.watcher._unsubscribe(self)


class Hints:
    """Which streams grew, told in-process by the writer that grew them.

    The host's ``/ingest`` writes into its own log while its consumers tail it: instead
    of those reading each of thousands of live streams every poll, the writer ``cover``s
    a stream while it holds that stream's writer (nothing else can grow it then), tells
    which streams it grew (``grew``, after the write), and ``uncover``s it on closing.
    Each reader ``subscribe``s and ``take``s the streams grown since it last looked.
    A hint is delivered to every subscriber at most once and may be late by a poll, so
    a reader still checks covered streams rarely (``LogReader``'s ``hint_check``): a
    hint that went missing delays an event, it never loses one. A subscriber's ``wake``
    event is set when its queue gets its first stream since the last ``take`` (once per
    poll at most, however many writes): a reader with nothing else live waits for it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._covered: set[str] = set()
        self._frozen: tuple[int, frozenset[str]] = (0, frozenset())
        self._version = 0
        self._queues: list[HintQueue] = []

    def subscribe(self) -> HintQueue:
        """A queue of its own for one reader."""
        queue = HintQueue(self)
        with self._lock:
            self._queues.append(queue)
        return queue

    def cover(self, stream: str) -> None:
        """``stream`` grows only through calls to ``grew`` until ``uncover``."""
        with self._lock:
            if stream not in self._covered:
                self._covered.add(stream)
                self._version += 1

    def uncover(self, stream: str) -> None:
        with self._lock:
            if stream in self._covered:
                self._covered.discard(stream)
                self._version += 1

    def grew(self, streams: Iterable[str]) -> None:
        """Tell every subscriber that ``streams`` grew (call after the write)."""
        grown = set(streams)
        with self._lock:
            for queue in self._queues:
                if grown and not queue._grown:
                    for wake in queue._wakes:
                        wake.set()
                queue._grown |= grown

    def covered(self) -> tuple[int, frozenset[str]]:
        """The covered streams, and a version that changes whenever they do."""
        with self._lock:
            if self._frozen[0] != self._version:
                self._frozen = (self._version, frozenset(self._covered))
            return self._frozen

    def _take(self, grown: set[str]) -> set[str]:
        with self._lock:
            taken = set(grown)
            grown.clear()
        return taken


class HintQueue:
    """One reader's view of ``Hints``: the streams grown since its last ``take``, and
    the events to set when there are some (``wakes``: a reader that follows waits on
    one)."""

    def __init__(self, hints: Hints) -> None:
        self.hints = hints
        self._wakes: tuple[threading.Event, ...] = ()
        self._grown: set[str] = set()

    def wakes(self, wake: threading.Event) -> Callable[[], None]:
        """Set ``wake`` when streams grow after a ``take``; returns the function that
        ends it (nothing else's event is replaced: two readers may wait on one queue)."""
        with self.hints._lock:
            self._wakes = (*self._wakes, wake)

        def undo() -> None:
            with self.hints._lock:
                self._wakes = tuple(w for w in self._wakes if w is not wake)

        return undo

    def take(self) -> set[str]:
        return self.hints._take(self._grown)

    def covered(self) -> tuple[int, frozenset[str]]:
        return self.hints.covered()

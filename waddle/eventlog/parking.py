"""Which streams ``LogReader.follow`` reads each round, so that cost follows change.

Two kinds of streams are not read every round:

* **Parked**: a stream whose last event taken is ``finish`` and a read finds nothing
  after it. From then on it is not read but stamped (``_stamp``), each parked stream
  once per ``park_check`` seconds (a few per round), and read again when its stamp
  changes (a run resumed, a stream created again) or the watcher names it. The stamp is
  taken before the read that finds nothing, so a write after it changes the stamp; a
  folder whose mtime is not yet ``settled`` is not parked (its mtime could change again
  within the same clock tick).
* **Stale**: a stream with no ``finish`` that a read finds nothing more in, and silent
  for ``STALE_S`` seconds (5 min): a run killed by SIGKILL, the OOM killer or a lost
  node never writes its ``finish``, and a folder with one such run would otherwise keep
  every tail polling every ``interval`` forever. The files' mtimes are never compared
  with the time here: on a network filesystem they are the file server's clock, often
  minutes off ours, so a live run would look stale at once (a server behind) or a
  crashed one never (ahead). Silent means either of two things. Its stamp's newest mtime
  (folder or newest segment) is ``STALE_S`` older than the newest mtime this process
  has seen in the log folder (``newest``: of every stamp it takes, and of the log
  folder at each round's stat of it, so no stat of its own), both the server's clock:
  the skew cancels, and a folder where some run is live or was just created parks its
  crashed runs within ``STALE_CHECK_S`` (one judged in a round before the live one's
  first stamp waits for its next stamp). This rule is left out for a stream this
  process has seen change within the last ``STALE_S`` (``changed``, its monotonic
  clock): ``newest`` only rises, so one mtime in the future (a file ``touch``-ed ahead,
  a server clock stepped back, an archive made on a fast clock) would otherwise make
  every live run look silent for the life of the process. Or, where every stream is
  that old, this process has seen its stamp unchanged for ``STALE_S`` of its own
  monotonic clock: a tail started anew over such a folder parks them ``STALE_S`` after
  it starts.
  It is parked like a finished one, but checked by its stamp every ``STALE_CHECK_S``
  seconds (5 s) rather than every ``park_check``: it may be a live run that logs
  rarely, so a write to it is read within seconds even if its notification is lost
  (and at once when the watcher names it). Five minutes is the dashboard's
  ``stale_after`` too: a run that has written nothing for that long is reported stale
  there, and a live run that logs more often than that is not parked, but for one case:
  where an mtime in the future is the newest seen, a live run this process has not yet
  seen write (a tail started anew) is parked at its first stamp that finds nothing new,
  as until then it cannot be told from a crashed one. The harm is that check's bound,
  one write per live run read up to ``STALE_CHECK_S`` late where its notification is
  lost or none comes: the stamp that write changes shows the run live, and mtimes do
  not park it again while it logs. A live stream is stamped for this at most once per
  ``STALE_CHECK_S`` (two stats). The writer's lock is not probed: a non-blocking
  ``flock`` taken at the moment a producer starts would make that producer fail as a
  second writer.
* **Hinted**: a stream whose writer is in this process and says when it grew
  (``waddle.eventlog.watch.Hints``: the host's ``/ingest``). Such a stream is read when
  a hint names it, again every round until a read reaches its end (a backlog), and
  otherwise only once per ``hint_check`` seconds, in turn: the rare check that finds an
  event whose hint went missing. The first round of ``follow`` reads every stream.

When no stream is read every round (all parked or hinted) and the watcher is up,
``quiet`` says so, and ``follow`` waits until a notification, a hint or a stop wakes it
(``waddle.eventlog.reader.IDLE_WAIT_S`` at most) instead of polling every ``interval``.

The log folder is listed when its mtime or its link count moves, every
``_RACY_RELIST_S`` seconds while its mtime is not ``settled``, and every ``_RELIST_S``
seconds. A stream created within the mtime's clock tick
leaves the mtime as it was; where the folder's link count is 2 + its streams (ext4,
xfs, tmpfs count subfolders) it changes the count and is seen at once, but a stream
deleted in the same tick (gc) gives the count back, so a recent folder is listed again
whatever its count says. A settled folder is listed only when its key moves (or every
``_RELIST_S``). A listing costs one ``listdir``; the present streams are
rebuilt only when it differs from the one before, so a log of 10,000 finished runs pays
little for a new one.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from waddle.eventlog.seek import event_before
from waddle.eventlog.segment import OpenSegments, segment_name
from waddle.eventlog.watch import Watch, Watcher
from waddle.ids import is_valid_id

if TYPE_CHECKING:
    from waddle.eventlog.reader import Batch, LogReader, Offset

PARK_CHECK_S = 10.0
PARK_CHECK_NOTIFIED_S = 60.0
STALE_S = 300.0
STALE_CHECK_S = 5.0
HINT_CHECK_S = 10.0
_RELIST_S = 30.0
_RACY_S = 2.0
_RACY_RELIST_S = 0.25
_REWATCH_S = 30.0

_Stamp = tuple[int, int, int, int, int]


def _stamp(paths: tuple[str, str]) -> _Stamp:
    """What changes when a stream changes: its folder (a segment added, the stream
    created again) and its newest segment (appended to); two stats, nothing read.
    ``paths``: the folder's and the segment's, as strings (no ``Path`` per check)."""
    try:
        folder = os.stat(paths[0])
    except FileNotFoundError:
        return (-1, -1, -1, -1, -1)
    try:
        newest = os.stat(paths[1])
    except FileNotFoundError:
        return (folder.st_ino, folder.st_mtime_ns, -1, -1, -1)
    return (folder.st_ino, folder.st_mtime_ns, newest.st_ino, newest.st_size, newest.st_mtime_ns)


Parked = tuple[tuple[str, str], _Stamp]


def settled(mtime_ns: int, unchanged_for: float) -> bool:
    """Whether a change made from now on moves ``mtime_ns``, so that an unchanged mtime
    vouches for what it dates: it is more than ``_RACY_S`` old by this machine's clock,
    or this process has seen it unchanged for ``_RACY_S`` of its own (``unchanged_for``
    seconds, since it first saw it). A file server's clock ahead of ours dates a folder
    in the future, where our clock alone would never vouch for it: the folder would be
    listed, and a finished stream read, every round for good."""
    return time.time() - mtime_ns / 1e9 > _RACY_S or unchanged_for >= _RACY_S


class _Turns:
    """Streams taken in turn, each about once per ``every`` seconds (a few per round)."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.queued: set[str] = set()
        self.credit = 0.0
        self.checked = time.monotonic()

    def add(self, stream: str) -> None:
        if stream not in self.queued:
            self.queued.add(stream)
            self.queue.append(stream)

    def due(self, member: Callable[[str], bool], count: int, every: float) -> list[str]:
        """The next streams whose turn it is; a stream no longer a ``member`` leaves."""
        now = time.monotonic()
        self.credit = min(self.credit + count * (now - self.checked) / every, count)
        self.checked = now
        due = []
        while self.queue and self.credit >= 1:
            stream = self.queue.popleft()
            if member(stream):
                self.credit -= 1
                due.append(stream)
                self.queue.append(stream)
            else:
                self.queued.discard(stream)
        return due


class Parking:
    """The streams to read each round (module docstring), for one ``follow``."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        self.log_dir = reader.log_dir
        self.watcher: Watch | None = None
        self.watched_at = -math.inf
        self.files = OpenSegments()
        self.parked: dict[str, Parked] = {}
        self.last: dict[str, tuple[Offset, str | None]] = {}
        self.turns = _Turns()
        self.stale: set[str] = set()  # parked without a finish: checked every STALE_CHECK_S
        self.stale_turns = _Turns()
        self.looked: dict[str, float] = {}  # when a live stream was last stamped
        self.seen: dict[str, tuple[_Stamp, float]] = {}  # its stamp, and since when
        self.changed: dict[str, float] = {}  # when its stamp was last seen to change
        self.newest = -1  # the newest mtime (ns) seen in the log folder: the server's clock
        self.listed: list[str] = []
        self.present: set[str] = set()
        self.listed_key: tuple[int, int, int] | None = None
        self.listed_at = -math.inf
        self.key_since = -math.inf  # when the listed key was first seen
        self.listed_racy = False
        self.names: set[str] = set()
        self.awake: list[str] | None = None
        self.hints = reader.hints
        self.sweep = _Turns()
        self.pending: set[str] | None = None  # None until the first round is read
        self.covered: frozenset[str] = frozenset()
        self.polled: tuple[int, list[str]] | None = None

    def watch(self, wake: threading.Event) -> None:
        """Subscribe to change notification, setting ``wake`` on news (it is a hint:
        polling goes on regardless); again where the log folder was deleted or made anew
        (a watch of the old one hears nothing) or, every ``_REWATCH_S``, where the
        watcher's thread ended (an inotify limit, an error). Where notification is off
        or not trusted (``Watcher.start``) it is not tried again."""
        watcher = self.watcher
        if watcher is not None:
            remade = self.listed_key is not None and self.listed_key[0] != watcher.inode
            waited = time.monotonic() - self.watched_at > _REWATCH_S
            retry = watcher.ended and (waited or watcher.gone)
            if not (remade or retry):
                return
            self.watcher = None
            watcher.close()
        if self.log_dir.is_dir():
            self.watcher = Watcher.subscribe(self.log_dir, wake)
            self.watched_at = time.monotonic()

    def close(self) -> None:
        self.files.close()
        if self.watcher is not None:
            self.watcher.close()

    def quiet(self) -> bool:
        """Whether no stream is live, and news will be told: every stream is parked or
        covered by hints, no hinted backlog is pending, the folder was not just changed,
        and the watcher is up. The reader may then wait until it is woken."""
        watcher = self.watcher
        if watcher is None or not watcher.active or self.listed_racy or self.pending:
            return False
        awake = self._awake()
        if not awake or self.hints is None:
            return not awake
        # Streams covered or uncovered since the round: one more round at ``interval``.
        polled = self.polled
        return polled is not None and polled[0] == self.hints.covered()[0] and not polled[1]

    def _awake(self) -> list[str]:
        """The streams listed and not parked."""
        if self.awake is None:
            self.awake = [s for s in self.listed if s not in self.parked]
            self.polled = None
        return self.awake

    def due(self) -> list[str]:
        """The streams to read this round: the awake ones and the parked ones that woke;
        of the hinted ones, those with news."""
        changed = self.watcher.take() if self.watcher is not None else set()
        grown = self.hints.take() if self.hints is not None else set()
        self._relist(force=bool((changed | grown) - self.present))
        for stream in self._to_check(changed):
            if not self.unchanged(stream):
                self._unpark(stream)
        for stream in grown & self.parked.keys():
            self._unpark(stream)
        awake = self._awake()
        if self.hints is None:
            return awake
        if self.pending is None:
            self.pending = set()
            return awake
        return self._hinted(grown)

    def _hinted(self, grown: set[str]) -> list[str]:
        """The awake streams not covered by hints, and the covered ones with news."""
        assert self.hints is not None and self.pending is not None and self.awake is not None
        version, covered = self.hints.covered()
        if self.polled is None or self.polled[0] != version:
            self.pending |= covered - self.covered  # read once, then on hints
            self.covered = covered
            self.polled = (version, [s for s in self.awake if s not in covered])
        quiet = self.sweep.due(self._quiet, len(self.sweep.queued), self._hint_check())
        news = [*self.pending, *grown, *quiet]
        if not news:
            return self.polled[1]
        return self.polled[1] + sorted({s for s in news if self._quiet(s)})

    def _quiet(self, stream: str) -> bool:
        """Whether ``stream`` is read only on hints (or the rare check) now."""
        return stream in self.covered and stream not in self.parked and stream in self.present

    def _hint_check(self) -> float:
        every = self.reader.hint_check
        return HINT_CHECK_S if every is None else every

    def unchanged(self, stream: str) -> bool:
        """Whether ``stream`` is parked and its stamp is as it was (two stats); a
        changed stamp is noted in ``changed``."""
        parked = self.parked.get(stream)
        if parked is None:
            return False
        if self._stamped(parked[0]) == parked[1]:
            return True
        self.changed[stream] = time.monotonic()
        return False

    def _unpark(self, stream: str) -> None:
        del self.parked[stream]
        self.stale.discard(stream)
        self.awake = None

    def before(self, stream: str, offset: Offset) -> Parked | None:
        """The stamp to park ``stream`` with if the read at ``offset`` finds nothing:
        for a stream whose last event is (or may be) ``finish``, and once per
        ``STALE_CHECK_S`` for one that may have gone stale."""
        last = self.last.get(stream)
        if last is not None and last[0] == offset and last[1] != "finish":
            now = time.monotonic()
            if now - self.looked.get(stream, -math.inf) < STALE_CHECK_S:
                return None
            self.looked[stream] = now
        # A read that finds nothing ends in the newest segment: the offset's, unless a
        # later one appears after the stamp, which changes the folder's mtime.
        folder = os.path.join(self.log_dir, stream)
        paths = (folder, os.path.join(folder, segment_name(offset.segment)))
        return paths, self._stamped(paths)

    def _stamped(self, paths: tuple[str, str]) -> _Stamp:
        """``_stamp(paths)``, its mtimes counted in ``newest``."""
        stamp = _stamp(paths)
        self.newest = max(self.newest, stamp[1], stamp[4])
        return stamp

    def after(self, batch: Batch, offset: Offset, stamp: Parked | None) -> None:
        """Note what a read found: the type of the last event taken, whether the stream
        may have more (read it again next round), whether it is finished (park it)."""
        stream = batch.stream
        news = bool(batch.events or batch.corrupt or batch.offset != offset)
        if self.pending is not None:
            if news and not batch.drained:
                self.pending.add(stream)
            else:
                self.pending.discard(stream)
                if stream in self.covered:
                    self.sweep.add(stream)
        if batch.events:
            self.last[stream] = (batch.offset, batch.events[-1]["type"])
            return
        if news:
            self.last.pop(stream, None)
            return
        if stamp is None:
            return
        last = self.last.get(stream)
        if last is None or last[0] != offset:
            path = self.log_dir / stream / segment_name(offset.segment)
            event = event_before(path, offset.position)
            last = self.last[stream] = (offset, None if event is None else event["type"])
        if last[1] == "finish" and settled(stamp[1][1], self._unchanged_for(stream, stamp[1])):
            self.turns.add(stream)
        elif last[1] != "finish" and self._silent(stream, stamp[1]):
            self.stale.add(stream)
            self.stale_turns.add(stream)
        else:
            return
        self.seen.pop(stream, None)
        self.parked[stream] = stamp
        self.awake = None
        self.files.forget(stream)

    def _silent(self, stream: str, stamp: _Stamp) -> bool:
        """Whether ``stream``, showing ``stamp``, has written nothing for ``STALE_S``:
        by this process's clock since it first saw ``stamp``, or else by the file
        server's clock against the newest mtime seen in the log folder, unless this
        process saw it change within ``STALE_S`` (module docstring)."""
        if self._unchanged_for(stream, stamp) >= STALE_S:
            return True
        if time.monotonic() - self.changed.get(stream, -math.inf) < STALE_S:
            return False
        return self.newest - max(stamp[1], stamp[4]) > STALE_S * 1e9

    def _unchanged_for(self, stream: str, stamp: _Stamp) -> float:
        """How long ``stream`` has shown ``stamp``, on this process's monotonic clock
        since it first saw it (0 for a new stream or a changed stamp, which ``changed``
        notes): its mtimes are compared only with each other, never with the time here."""
        now = time.monotonic()
        seen = self.seen.get(stream)
        if seen is None or seen[0] != stamp:
            if seen is not None:
                self.changed[stream] = now
            self.seen[stream] = (stamp, now)
            return 0.0
        return now - seen[1]

    def _to_check(self, changed: set[str]) -> list[str]:
        """Parked streams due for a check: those the watcher named, and the next few in
        turn, so that each is checked about once per ``park_check`` seconds."""
        every = self.reader.park_check
        if every is None:
            notified = self.watcher is not None and self.watcher.active
            every = PARK_CHECK_NOTIFIED_S if notified else PARK_CHECK_S
        due = [s for s in changed if s in self.parked]
        stale = self.stale
        finished = len(self.parked) - len(stale)
        due += self.turns.due(lambda s: s in self.parked and s not in stale, finished, every)
        return due + self.stale_turns.due(stale.__contains__, len(stale), STALE_CHECK_S)

    def _relist(self, *, force: bool) -> None:
        """List the log folder again if it may have changed since the last listing."""
        try:
            folder = os.stat(self.log_dir)
        except FileNotFoundError:
            self.listed, self.present, self.listed_key, self.awake = [], set(), None, None
            self.names = set()
            return
        key = (folder.st_ino, folder.st_mtime_ns, folder.st_nlink)
        self.newest = max(self.newest, folder.st_mtime_ns)
        now = time.monotonic()
        racy = self.listed_racy and now - self.listed_at >= _RACY_RELIST_S
        if not (force or racy or key != self.listed_key or now - self.listed_at > _RELIST_S):
            return
        if key != self.listed_key:
            self.key_since = now
        self.listed_key, self.listed_at = key, now
        try:
            names = set(os.listdir(self.log_dir))
        except FileNotFoundError:
            names = set()
        if names != self.names:
            self._moved(names)
        self.listed_racy = not settled(folder.st_mtime_ns, now - self.key_since)

    def _moved(self, names: set[str]) -> None:
        """Take a listing that differs from the last: what came and went, nothing else."""
        came = [n for n in names - self.names if is_valid_id(n) and os.path.isdir(self.log_dir / n)]
        gone = self.present - names
        self.names = names
        self.present = (self.present - gone).union(came)
        self.listed = sorted(self.present)
        if self.pending is not None:  # a new stream is read once, hinted or not
            self.pending = (self.pending - gone).union(came)
        for stream in gone:
            self.parked.pop(stream, None)
            self.stale.discard(stream)
            self.looked.pop(stream, None)
            self.seen.pop(stream, None)
            self.changed.pop(stream, None)
            self.last.pop(stream, None)
            self.files.forget(stream)
        self.awake = None

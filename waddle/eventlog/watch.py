"""Change notification for the tailing reader: which streams changed, where the OS says
(``Watcher``) and where this process wrote them (``Hints``).

The reader parks finished streams (``waddle.eventlog.reader``): it checks them only
rarely, so a change to one (a resumed run, a stream created again) would wait for that
check. ``Watcher`` shortens the wait where the OS has change notification (inotify,
through ``watchfiles``): it notes which streams' folders changed, and the reader checks
those at its next poll. It is a hint only: a lost notification, a network filesystem
that sends none, or no ``watchfiles`` at all leave the reader's rare check to find the
change, so nothing depends on it but how soon a parked stream wakes up.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

logger = logging.getLogger("waddle.eventlog")

# How often watchfiles looks for gathered changes (it takes the GIL each time: at 50 ms,
# 0.1 % of a core per watcher) and how long it may gather them (ms): a resumed run is
# woken within about half a second; live streams are polled, not woken.
_STEP_MS = 250
_DEBOUNCE_MS = 500


class Watcher:
    """Notes the streams under ``log_dir`` that changed, from a background thread."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._prefix = os.path.join(os.path.abspath(log_dir), "")
        self.active = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start watching; False where there is no notification to be had (poll only)."""
        try:
            import watchfiles
        except ImportError:
            return False
        self.active = True
        self._thread = threading.Thread(
            target=self._run, args=(watchfiles,), name="waddle-watch", daemon=True
        )
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.active = False

    def take(self) -> set[str]:
        """The streams changed since the last ``take`` (names of folders under the log)."""
        with self._lock:
            changed, self._changed = self._changed, set()
        return changed

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
        except Exception as exc:  # a hint only: polling goes on without it
            logger.info("waddle: no change notification for %s (%s); polling", self.log_dir, exc)
        finally:
            self.active = False

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
            self._changed |= names


class Hints:
    """Which streams grew, told in-process by the writer that grew them.

    The host's ``/ingest`` writes into its own log while its consumers tail it: instead
    of those reading each of thousands of live streams every poll, the writer ``cover``s
    a stream while it holds that stream's writer (nothing else can grow it then), tells
    which streams it grew (``grew``, after the write), and ``uncover``s it on closing.
    Each reader ``subscribe``s and ``take``s the streams grown since it last looked.
    A hint is delivered to every subscriber at most once and may be late by a poll, so
    a reader still checks covered streams rarely (``LogReader``'s ``hint_check``): a
    hint that went missing delays an event, it never loses one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._covered: set[str] = set()
        self._frozen: tuple[int, frozenset[str]] = (0, frozenset())
        self._version = 0
        self._queues: list[set[str]] = []

    def subscribe(self) -> HintQueue:
        """A queue of its own for one reader."""
        with self._lock:
            grown: set[str] = set()
            self._queues.append(grown)
        return HintQueue(self, grown)

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
                queue |= grown

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
    """One reader's view of ``Hints``: the streams grown since its last ``take``."""

    def __init__(self, hints: Hints, grown: set[str]) -> None:
        self.hints = hints
        self._grown = grown

    def take(self) -> set[str]:
        return self.hints._take(self._grown)

    def covered(self) -> tuple[int, frozenset[str]]:
        return self.hints.covered()

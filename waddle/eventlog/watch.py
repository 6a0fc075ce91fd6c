"""Change notification for the tailing reader: which streams changed, where the OS says.

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
        names = set()
        for path in paths:
            parts = Path(path).relative_to(self.log_dir).parts
            if parts:
                names.add(parts[0])
        with self._lock:
            self._changed |= names

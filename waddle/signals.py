"""One rule for SIGINT and SIGTERM in Waddle's long-running commands.

``serve``, ``waddle-consume``, ``sync`` and the relay all stop the same way (as uvicorn
does): the first SIGINT or SIGTERM asks to stop (the process finishes its round, commits
and exits on its own); a second one forces it, by default with the signal's default
action (the process dies of it). Handlers are installed once, by ``on_stop_signals``,
and the previous ones come back when the returned function is called.

Only the main thread may install handlers: anywhere else (a test calling a command in a
thread) nothing is installed and the caller's own ``stop`` is the only way to stop.

A command's stop is a ``StopEvent``: a tail with no stream live waits for news on an
event of its own (``LogReader.follow``), and setting the stop sets that event too, so a
stop ends such a wait at once without every caller having to remember to wake it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopEvent(threading.Event):
    """A stop event whose ``set`` also sets the events registered with ``wakes``."""

    def __init__(self) -> None:
        super().__init__()
        # Replaced whole, never changed in place: ``set`` (a signal handler may call it
        # while the main thread registers) reads it without taking the lock.
        self._wakes: tuple[threading.Event, ...] = ()
        self._wakes_lock = threading.Lock()

    def set(self) -> None:
        super().set()
        for wake in self._wakes:
            wake.set()

    def wakes(self, wake: threading.Event) -> Callable[[], None]:
        """Set ``wake`` whenever this stop is set (at once if it is); returns the function
        that ends it (a reader registers its wait for the length of ``follow``)."""
        with self._wakes_lock:
            self._wakes = (*self._wakes, wake)
        if self.is_set():
            wake.set()

        def undo() -> None:
            with self._wakes_lock:
                self._wakes = tuple(w for w in self._wakes if w is not wake)

        return undo


def die_of(signum: int) -> None:
    """End the process with the default action of ``signum`` (as if never handled)."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def on_stop_signals(
    stop: Callable[[int], None], force: Callable[[int], None] = die_of
) -> Callable[[], None]:
    """Call ``stop(signum)`` on the first SIGINT/SIGTERM and ``force(signum)`` on any later
    one; return the function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    received: list[int] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            stop(signum)
        else:
            force(signum)

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore

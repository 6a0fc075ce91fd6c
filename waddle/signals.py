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
stop ends such a wait at once without every caller having to remember to wake it. Its
``set`` takes no lock, since the handler that calls it may have interrupted the main
thread while that thread held one (``threading.Event``'s own would then hang the process
on the first signal).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# How long a main thread blocks at most before it looks for a signal: CPython runs a
# handler only between bytecodes, and a signal that lands just before a blocking wait
# begins (its lock's system call) is not seen until that wait ends. A join without a
# timeout could then sit on a SIGTERM forever; one in slices sees it this late at most.
SIGNAL_CHECK_S = 2.0


class StopEvent(threading.Event):
    """A ``threading.Event`` whose ``set`` a signal handler may call, and that also sets
    the events registered with ``wakes``.

    ``threading.Event.set`` takes the lock that ``wait`` and ``clear`` hold for a moment
    on the waiting thread, and a handler runs on the main thread between two bytecodes:
    a stop signal that lands while the main thread holds that lock waits on itself
    forever. Here ``set`` takes no lock. It raises the flag, then releases the lock that
    each ``wait`` blocks on; ``wait`` registers that lock before it reads the flag, so a
    ``set`` that lands between the two, even on its own thread, is seen either way.
    ``set``, ``is_set`` and ``clear`` take no lock; ``wait`` and ``wakes`` may, and do
    not belong in a handler. The events that ``wakes`` names are set by the same call,
    so a ``set`` is only as safe as they are: a plain ``threading.Event`` that the main
    thread waits on can hang the handler the same way.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stopped = False
        # What ``set`` calls: each ``wait``'s release and each ``wakes`` event's set.
        # Replaced whole under the lock, never changed in place: ``set`` reads it
        # without the lock, so a handler never waits on the thread it interrupted.
        self._wakes: tuple[Callable[[], None], ...] = ()
        self._wakes_lock = threading.Lock()

    def is_set(self) -> bool:
        return self._stopped

    def set(self) -> None:
        self._stopped = True
        for call in self._wakes:
            call()

    def clear(self) -> None:
        self._stopped = False

    def wait(self, timeout: float | None = None) -> bool:
        waiter = threading.Lock()
        waiter.acquire()
        undo = self._wake_with(lambda: _release(waiter))
        try:
            if self._stopped:
                return True
            if timeout is None:
                return waiter.acquire()
            return waiter.acquire(timeout=max(timeout, 0)) or self._stopped
        finally:
            undo()

    def wakes(self, wake: threading.Event) -> Callable[[], None]:
        """Set ``wake`` whenever this stop is set (at once if it is); returns the function
        that ends it (a reader registers its wait for the length of ``follow``)."""
        undo = self._wake_with(wake.set)
        if self.is_set():  # a subclass's too (``_Rhythm``: its outer stop)
            wake.set()
        return undo

    def _wake_with(self, call: Callable[[], None]) -> Callable[[], None]:
        """Have ``set`` call ``call``; returns the function that stops it."""
        with self._wakes_lock:
            self._wakes = (*self._wakes, call)

        def undo() -> None:
            with self._wakes_lock:
                self._wakes = tuple(c for c in self._wakes if c is not call)

        return undo


def join(thread: threading.Thread) -> None:
    """``thread.join()`` for a main thread, in slices of ``SIGNAL_CHECK_S``: a stop
    signal that lands as a slice begins runs its handler when that slice ends, not when
    the thread does (which may be waiting for that very signal)."""
    while thread.is_alive():
        thread.join(SIGNAL_CHECK_S)


def _release(waiter: threading.Lock) -> None:
    """Release ``waiter`` unless an earlier ``set`` already has."""
    with contextlib.suppress(RuntimeError):
        waiter.release()


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

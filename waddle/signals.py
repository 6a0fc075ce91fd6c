"""One rule for SIGINT and SIGTERM in Waddle's long-running commands.

``serve``, ``waddle-consume``, ``sync`` and the relay all stop the same way (as uvicorn
does): the first SIGINT or SIGTERM asks to stop (the process finishes its round, commits
and exits on its own); a second one forces it, by default with the signal's default
action (the process dies of it). Handlers are installed once, by ``on_stop_signals``,
and the previous ones come back when the returned function is called.

Only the main thread may install handlers: anywhere else (a test calling a command in a
thread) nothing is installed and the caller's own ``stop`` is the only way to stop.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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

"""Console capture: a tee on sys.stdout/sys.stderr that records lines as ``console`` events.

Text still reaches the terminal first and unchanged. Complete lines (ended by ``\\n`` or
``\\r``, so progress bars are recorded as they redraw) become events; a trailing partial
line waits for its end or for ``close``. Recording never raises into the caller.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

Record = Callable[[str, str], object]


class Tee:
    """Wraps one text stream; everything else is delegated to it."""

    def __init__(self, stream: TextIO, name: str, record: Record) -> None:
        self._stream = stream
        self._name = name
        self._record = record
        self._pending = ""
        self._busy = threading.local()

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if getattr(self._busy, "on", False):  # a warning printed while recording
            return written
        self._pending += text
        cut = max(self._pending.rfind("\n"), self._pending.rfind("\r")) + 1
        if cut:
            self._emit(self._pending[:cut])
            self._pending = self._pending[cut:]
        return written

    def _emit(self, text: str) -> None:
        self._busy.on = True
        try:
            self._record(self._name, text)
        finally:
            self._busy.on = False

    def flush_partial(self) -> None:
        if self._pending:
            self._emit(self._pending)
            self._pending = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ConsoleCapture:
    """Installs tees on sys.stdout and sys.stderr until ``close``."""

    def __init__(self, record: Record) -> None:
        self._originals = (sys.stdout, sys.stderr)
        self._tees = (Tee(sys.stdout, "stdout", record), Tee(sys.stderr, "stderr", record))
        sys.stdout, sys.stderr = self._tees

    def close(self) -> None:
        """Record what is left of a partial line and put the original streams back."""
        for tee in self._tees:
            tee.flush_partial()
        if (sys.stdout, sys.stderr) == self._tees:
            sys.stdout, sys.stderr = self._originals

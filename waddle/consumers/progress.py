"""Progress of catching up a backlog: a bar on a terminal, plain log lines otherwise.

Bytes are the measure (the backlog is known in bytes before anything is parsed). The
total is fixed when a consumer starts; what producers append meanwhile is tailed, not
counted. Nothing is shown for a backlog under ``min_bytes``. Safe to share between the
consumer threads of one daemon.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from waddle.consumers.lag import bytes_behind, segment_sizes
from waddle.eventlog.reader import Batch, Offset
from waddle.eventlog.segment import log_dir, segment_name

logger = logging.getLogger("waddle.consumers")

MIN_BYTES = 16 * 1024 * 1024
LOG_EVERY_S = 5.0
_BAR_WIDTH = 30
_MIB = 1024 * 1024


class CatchUpProgress:
    """Implements ``waddle.consumers.base.Progress`` for the daemon."""

    def __init__(
        self,
        root: Path | str,
        *,
        out: TextIO | None = None,
        tty: bool | None = None,
        min_bytes: int = MIN_BYTES,
    ) -> None:
        self.log_dir = log_dir(Path(root))
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.min_bytes = min_bytes
        self.total = 0
        self.done = 0
        self._positions: dict[tuple[str, str], Offset] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_shown = 0.0
        self._finished = False

    def begin(self, name: str, offsets: Mapping[str, Offset]) -> None:
        backlog = 0
        try:
            streams = os.listdir(self.log_dir)
        except FileNotFoundError:
            streams = []
        for stream in streams:
            offset = offsets.get(stream, Offset())
            backlog += bytes_behind(segment_sizes(self.log_dir / stream), offset)
            self._positions[(name, stream)] = offset
        with self._lock:
            self.total += backlog
            if self.total >= self.min_bytes:
                logger.info("waddle: %s catching up %.1f MiB of log", name, backlog / _MIB)

    def advance(self, name: str, batches: list[Batch]) -> None:
        used = 0
        for batch in batches:
            before = self._positions.get((name, batch.stream), Offset())
            used += self._used(batch.stream, before, batch.offset)
            self._positions[(name, batch.stream)] = batch.offset
        with self._lock:
            self.done += used
            if self._finished or self.total < self.min_bytes:
                return
            now = time.monotonic()
            if self.done >= self.total:
                self._finished = True
                self._show(now, final=True)
            elif now - self._last_shown >= (0.2 if self.tty else LOG_EVERY_S):
                self._show(now)

    def _used(self, stream: str, before: Offset, after: Offset) -> int:
        if after.segment == before.segment:
            return max(after.position - before.position, 0)
        try:
            size = os.stat(self.log_dir / stream / segment_name(before.segment)).st_size
        except FileNotFoundError:
            size = before.position
        return max(size - before.position, 0) + after.position

    def _show(self, now: float, final: bool = False) -> None:
        self._last_shown = now
        done = min(self.done, self.total)
        rate = done / max(now - self._started, 1e-9) / _MIB
        figures = f"{done / _MIB:.1f}/{self.total / _MIB:.1f} MiB, {rate:.1f} MiB/s"
        if not self.tty:
            logger.info("waddle: %s %s", "caught up:" if final else "catching up:", figures)
            return
        filled = int(_BAR_WIDTH * done / self.total)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        end = "\n" if final else ""
        self.out.write(f"\rcatching up [{bar}] {100 * done / self.total:3.0f}% {figures}{end}")
        self.out.flush()

    def close(self) -> None:
        """End the bar's line if it is still open (stopped before catching up)."""
        with self._lock:
            if self.tty and not self._finished and self._last_shown:
                self.out.write("\n")
                self.out.flush()

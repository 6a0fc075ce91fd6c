"""The runs snapshot that the DuckDB writer publishes for readers in other processes.

DuckDB lets no other process open a database file that a writer holds, not even
read-only; ``waddle ls`` and ``waddle show`` read this snapshot instead (see
``waddle.store.schema.open_reader``). It is written by a thread of its own on its own cursor
(committed data only), replaced atomically, once when the writer starts, after commits
that changed runs at most once per interval, and once more when the writer stops: at
most an interval behind the database while the writer runs, current once it stopped.
A failure to publish is logged and retried at the next change; it never stops the writer.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import duckdb

from waddle.store import schema as store

logger = logging.getLogger("waddle.consumers")


class Snapshots:
    """Publishes ``store.snapshot_path(path)`` from a thread."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, path: Path, interval: float) -> None:
        self.cursor = cursor
        self.path = path
        self.interval = interval
        self._due = threading.Event()
        self._closing = threading.Event()
        self._due.set()
        target = store.snapshot_path(path)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):
            stale.unlink(missing_ok=True)  # left by a writer that was killed mid-write
        self._thread = threading.Thread(target=self._loop, name="waddle-snapshot", daemon=True)
        self._thread.start()

    def due(self) -> None:
        """Runs changed: publish soon."""
        self._due.set()

    def _publish(self) -> None:
        try:
            store.publish_snapshot(self.cursor, self.path)
        except (duckdb.Error, OSError) as exc:
            logger.warning("waddle: could not publish the runs snapshot: %s", exc)

    def _loop(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            self._publish()
            if self._closing.wait(self.interval):
                if self._due.is_set():
                    self._publish()
                return

    def close(self) -> None:
        """Publish what is due, stop the thread, close the cursor."""
        self._closing.set()
        self._due.set()
        self._thread.join()
        self.cursor.close()

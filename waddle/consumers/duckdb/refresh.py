"""Bring a DuckDB store up to date with the log when no writer holds it.

What ``waddle ls``/``show``/``export`` and ``waddle.Api()`` do before they read, so that
they work right after a training script without ``waddle-consume``: the DuckDB writer,
run once in the calling process (``waddle-consume --once``), quietly. It registers
under the writer's usual name, so a later daemon resumes from what it committed. When a
writer already runs on that store (or starts meanwhile) it does nothing: readers then
see that writer's database or the runs snapshot it publishes.
"""

from __future__ import annotations

import threading
from pathlib import Path

from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.registry import StateStore
from waddle.errors import ConsumerLockedError, StoreLockedError
from waddle.paths import log_dir


def refresh(root: Path, db_path: Path) -> bool:
    """Catch ``db_path`` up with the log under ``root``; whether it did (False: no log,
    or a writer holds the store)."""
    if not log_dir(root).is_dir():
        return False
    writer = DuckDBWriter(root, db_path)
    if StateStore(root).is_running(writer.name):
        return False
    try:
        run_consumer(writer, root, threading.Event(), once=True)
    except (ConsumerLockedError, StoreLockedError):
        return False
    return True

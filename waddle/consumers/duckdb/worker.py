"""One thread that owns the DuckDB writer's connection and its open transaction.

Why a thread: the writer spends its time in two places, parsing events (Python, holding
the GIL) and writing rows (DuckDB, mostly native code). Handing each round's rows to
this thread lets DuckDB write them while the next round is parsed; a commit then only
waits for the last round. Operations run in the order they were submitted, all in one
transaction that the first operation opens and ``commit`` closes.

Guarantees: ``commit`` returns only after DuckDB committed everything submitted before
it, or raises; after an error every later operation is skipped until ``rollback``, so
a failed transaction never commits half. Backpressure: at most ``depth`` operations
wait in the queue; ``submit`` blocks beyond that, which bounds memory.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import duckdb

Operation = Callable[[duckdb.DuckDBPyConnection], Any]
_STOP = object()


class DatabaseWorker:
    """Runs operations on ``con`` in a background thread, inside one transaction."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, depth: int = 2, name: str = "") -> None:
        self.con = con
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._open = False
        self._thread = threading.Thread(
            target=self._loop, name=f"waddle-duckdb-{name}", daemon=True
        )
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            operation, done = item
            # == not `is`: each self._rollback is a new bound method object.
            rollback = operation == self._rollback
            if self._error is None or rollback:
                try:
                    if not self._open and not rollback:
                        self.con.execute("BEGIN TRANSACTION")
                        self._open = True
                    operation(self.con)
                except BaseException as exc:
                    self._error = exc
            if done is not None:
                done.set()

    def submit(self, operation: Operation) -> None:
        """Queue ``operation``; raises the error of an earlier one instead, if any."""
        self.raise_error()
        self._queue.put((operation, None))

    def _wait(self, operation: Operation) -> None:
        done = threading.Event()
        self._queue.put((operation, done))
        done.wait()

    def commit(self, last: Operation) -> None:
        """Run ``last`` then COMMIT; wait for both. Raises what failed (nothing committed)."""

        def finish(con: duckdb.DuckDBPyConnection) -> None:
            last(con)
            con.execute("COMMIT")
            self._open = False

        self.raise_error()
        self._wait(finish)
        self.raise_error()

    def _rollback(self, con: duckdb.DuckDBPyConnection) -> None:
        if self._open:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            self._open = False
        self._error = None

    def rollback(self) -> None:
        """Drop the open transaction and any error; wait until done."""
        self._wait(self._rollback)

    def raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Roll back what was not committed and stop the thread (the caller closes ``con``)."""
        if self._thread.is_alive():
            self.rollback()
            self._queue.put(_STOP)
            self._thread.join()

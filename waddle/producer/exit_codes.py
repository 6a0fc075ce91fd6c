"""How a run's end is recorded: its status and its exit code.

``finish`` runs at exit and in signal handlers, so nothing here raises: an exit code the
log cannot hold is dropped with a warning, and the status still says the run failed.
"""

from __future__ import annotations

import logging
import operator
from typing import SupportsIndex

from waddle.limits import INT64_MAX, INT64_MIN

logger = logging.getLogger("waddle")

# A run stopped by signal N exits with 128 + N, as a shell reports it.
SIGNAL_EXIT_BASE = 128


def status_for(exit_code: object) -> str:
    """``finished`` for a clean exit, ``failed`` otherwise."""
    return "finished" if not exit_code else "failed"


def recordable_exit_code(exit_code: object) -> int | None:
    """``exit_code`` as the log records it: an integer within 64 bits, else None."""
    if exit_code is None:
        return None
    # ints, bools, numpy integers: whatever is an index
    code = operator.index(exit_code) if isinstance(exit_code, SupportsIndex) else None
    if code is None or not INT64_MIN <= code <= INT64_MAX:
        logger.warning(
            "waddle: exit code %.100r is not an integer within 64 bits; the run is recorded "
            "without an exit code",
            exit_code,
        )
        return None
    return code

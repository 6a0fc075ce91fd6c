"""Riding out a store that cannot write for a while: what is worth a retry, and how long to wait.

A full disk must not kill a consumer for good. With a ``Retry``, the run loop
(``run_consumer(..., retry=Retry())``) meets a transient failure by closing the consumer
(dropping what it had not committed), waiting, and starting it again from what it
committed: a durable consumer resumes from its own store, so no event is lost or doubled,
and it catches up by itself once the cause is gone.

Transient (retried): ``TransientError``; ``StoreError`` (the store failed to write, e.g. a
full disk), except ``StoreLockedError`` (another process holds the file: an operator must
act); ``OSError`` of a full disk or an exhausted quota (ENOSPC, EDQUOT), such as a state
file that cannot be published. Everything else (``PermanentError``, a consumer name
another process runs, a bug) still ends the loop.

Backoff: ``first`` seconds, doubling up to ``most``, reset by the next successful commit.
The failure is logged when it happens (an error with the cause, its path and the remedy),
each further attempt as a warning, the recovery once. ``failure`` is the error being
waited out, None while the consumer works: the web app answers reads with 503
``store_unavailable`` while it is set.
"""

from __future__ import annotations

import errno
import logging
import threading

from waddle.errors import StoreError, StoreLockedError, TransientError

logger = logging.getLogger("waddle.consumers")

RETRY_FIRST_S = 0.5
RETRY_MOST_S = 15.0
_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may cure ``exc`` (see the module docstring for the split)."""
    if isinstance(exc, StoreLockedError):
        return False
    if isinstance(exc, (TransientError, StoreError)):
        return True
    return isinstance(exc, OSError) and exc.errno in _FULL


class Retry:
    """The backoff and the health of one consumer that is retried through transient failures."""

    def __init__(self, first: float = RETRY_FIRST_S, most: float = RETRY_MOST_S) -> None:
        self.first = first
        self.most = most
        self.failure: BaseException | None = None
        self.attempts = 0

    def wait_out(self, name: str, exc: BaseException, stop: threading.Event) -> bool:
        """Record and log ``exc``, then wait the backoff; False when ``stop`` came first."""
        delay = min(self.first * 2**self.attempts, self.most)
        self.attempts += 1
        if self.failure is None:
            logger.error(
                "waddle: consumer %s failed: %s. Nothing is lost: it retries in %.1fs, "
                "resumes from its last commit and catches up by itself once the store can "
                "write again (free disk space on the device named above, or fix the cause)",
                name,
                exc,
                delay,
            )
        else:
            logger.warning(
                "waddle: consumer %s failed again (attempt %d): %s; next retry in %.1fs",
                name,
                self.attempts,
                exc,
                delay,
            )
        self.failure = exc
        return not stop.wait(delay)

    def succeeded(self, name: str) -> None:
        """A commit went through: the store writes again."""
        if self.failure is not None:
            logger.warning(
                "waddle: consumer %s works again after %d failed attempts", name, self.attempts
            )
        self.failure = None
        self.attempts = 0

"""The one error tree of Waddle.

::

    WaddleError
    ├── UsageError            misuse at a call site (bad id, bad argument); raised to the caller
    │   ├── EncodeError       a logged value that cannot be encoded; names the key, nothing written
    │   └── InvalidIdError    a run or stream id that would not be a safe path component
    ├── StreamLockedError     a second writer for a stream that already has one
    ├── ConsumerLockedError   a consumer name that a live process already runs
    ├── StoreError            the DuckDB store failed (a translated duckdb error)
    │   └── StoreLockedError  another process holds the database file for writing
    ├── LogFormatError        a complete log line that does not parse or breaks the schema
    ├── TransientError        worth retrying (a host that is down, a timeout)
    └── PermanentError        retrying will not help; an operator must act (a wrong token)

The producer raises only ``UsageError`` (and ``StreamLockedError`` at ``init``); I/O trouble
on the hot path is counted and warned about, never raised into a training loop.
"""

from __future__ import annotations


class WaddleError(Exception):
    """Base of every error Waddle raises on purpose."""


class UsageError(WaddleError, ValueError):
    """The caller used the API wrongly; the message says how to fix the call."""


class EncodeError(UsageError, TypeError):
    """A logged value cannot be encoded as JSON; ``key`` names where it sits."""

    def __init__(self, key: str, value: object, reason: str = "") -> None:
        self.key = key
        reason = reason or (
            f"a value of type {type(value).__qualname__} is not a number, string, bool, "
            "None, list or dict"
        )
        super().__init__(f"cannot log key {key!r}: {reason}; nothing was written")


class InvalidIdError(UsageError):
    """An id that does not match ``^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`` (it becomes a path)."""


class StreamLockedError(WaddleError):
    """Another live process (or another Run in this one) already writes this stream."""


class ConsumerLockedError(WaddleError):
    """A consumer name that another live process (or thread) already runs."""


class StoreError(WaddleError):
    """The DuckDB store failed; the message names the file and what to do."""


class StoreLockedError(StoreError):
    """Another process holds the database file for writing (DuckDB allows one)."""


class LogFormatError(WaddleError):
    """A complete line that is not a valid event; carries where it sits for the operator."""

    def __init__(self, reason: str, *, stream: str = "", segment: str = "", offset: int = -1):
        self.reason = reason
        self.stream = stream
        self.segment = segment
        self.offset = offset
        where = f" in stream {stream!r} segment {segment} at byte {offset}" if stream else ""
        super().__init__(f"{reason}{where}")


class TransientError(WaddleError):
    """A failure that a retry may cure; callers back off and try again."""


class PermanentError(WaddleError):
    """A failure a retry will not cure; stop and tell the operator what to change."""

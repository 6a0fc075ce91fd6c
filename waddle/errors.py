"""The one error tree of Waddle.

::

    WaddleError
    ├── UsageError            misuse at a call site (bad id, bad argument); raised to the caller
    │   ├── EncodeError       a logged value that cannot be encoded; names the key, nothing written
    │   └── InvalidIdError    a run or stream id that would not be a safe path component
    ├── StreamLockedError     a second writer for a stream that already has one (``stream``)
    ├── ConsumerLockedError   a consumer name that a live process already runs
    ├── StoreError            the DuckDB store failed (a translated duckdb error)
    │   └── StoreLockedError  another process holds the database file for writing
    ├── LogFormatError        a complete log line that does not parse or breaks the schema
    ├── IngestError           a host's log cannot take a request's events (``stream``)
    │   ├── SeqGap            the events start past the next seq (``expected``, ``got``)
    │   ├── StreamConflict    another process started a stream of that id (``held``, ``sent``)
    │   ├── WriteFailed       the disk refused the write, nothing written (``held``, ``causes``)
    │   ├── LogUnavailable    the stream's log cannot be opened (``reason``)
    │   └── IngestClosed      the host is stopping
    ├── HostRefused           a relay's host answered no (``status``, ``code``, ``retry_after``)
    ├── TransientError        worth retrying (a host that is down, a timeout)
    │   ├── HostUnreachable   no answer from a relay's host (refused, reset, timed out)
    │   └── HostBusy          (also a HostRefused) 5xx, 408, 425, 429: retry after a while
    └── PermanentError        retrying will not help; an operator must act (a wrong token)
        └── HostDenied        (also a HostRefused) any other refusal; ``scope`` says what
                              it stops: the whole ``host`` or one ``stream``

The producer raises only ``UsageError`` (and ``StreamLockedError`` at ``init``); I/O trouble
on the hot path is counted and warned about, never raised into a training loop.

Errors carry what locates them as typed attributes set by their constructor; nothing is
added to an exception after it is made. Below the web layer nothing knows HTTP: the
``IngestError`` family is turned into answers only by ``waddle.web.errors``, and a host's
answers become ``HostRefused`` errors only in ``waddle.consumers.relay.client``.
"""

from __future__ import annotations

from typing import Literal


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

    def __init__(self, message: str, *, stream: str = "") -> None:
        super().__init__(message)
        self.stream = stream


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


class IngestError(WaddleError):
    """A host's log cannot take a request's events for ``stream``; nothing was written."""

    def __init__(self, message: str, *, stream: str) -> None:
        super().__init__(message)
        self.stream = stream


class SeqGap(IngestError):
    """The events start at ``got``, past ``expected``, the next seq the host lacks."""

    def __init__(self, stream: str, expected: int, got: int) -> None:
        super().__init__(
            f"stream {stream!r} expects seq {expected} next, the request starts at {got}; "
            f"send from seq {expected}",
            stream=stream,
        )
        self.expected = expected
        self.got = got


class StreamConflict(IngestError):
    """Seq 0 resent by another process than the one that started the stream held.

    ``held`` and ``sent`` describe the two origins (run id, host, pid): two machines that
    gave a run the same id, whose events must not be taken for resends.
    """

    def __init__(self, stream: str, held: str, sent: str) -> None:
        super().__init__(
            f"stream {stream!r} on this host was started by another process ({held}) than "
            f"this one ({sent}); the events are not resends. Give one of the runs another id "
            "(init(id=...) or WADDLE_RUN_ID).",
            stream=stream,
        )
        self.held = held
        self.sent = sent


class WriteFailed(IngestError):
    """The write failed (a full disk) and wrote nothing; the host holds up to ``held``."""

    def __init__(self, stream: str, held: int, causes: str) -> None:
        super().__init__(
            f"the host could not write stream {stream!r} ({causes}); it holds up to seq "
            f"{held}: resend from there later",
            stream=stream,
        )
        self.held = held
        self.causes = causes


class LogUnavailable(IngestError):
    """The stream's log cannot be opened (``reason``: the OS error)."""

    def __init__(self, stream: str, reason: str) -> None:
        super().__init__(f"cannot open the log of stream {stream!r}: {reason}", stream=stream)
        self.reason = reason


class IngestClosed(IngestError):
    """The host is stopping and takes no more events."""

    def __init__(self, stream: str) -> None:
        super().__init__("the server is stopping; retry later", stream=stream)


class HostRefused(WaddleError):
    """A relay's host answered with a refusal: ``status`` and ``code`` (the body's ``error``).

    ``retry_after`` is the host's Retry-After in seconds, or None. Raised only as one of
    its two kinds, ``HostBusy`` (transient) or ``HostDenied`` (permanent).
    """

    def __init__(
        self, message: str, *, status: int, code: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class TransientError(WaddleError):
    """A failure that a retry may cure; callers back off and try again."""


class PermanentError(WaddleError):
    """A failure a retry will not cure; stop and tell the operator what to change."""


class HostUnreachable(TransientError):
    """No answer from a relay's host (connection refused or reset, a timeout)."""


class HostBusy(HostRefused, TransientError):
    """The host cannot take the request now (5xx, 408, 425, 429); retry after a while."""


class HostDenied(HostRefused, PermanentError):
    """The host refuses for good; ``scope`` says what that stops.

    ``host``: every stream (a wrong token, not a Waddle host); ``stream``: this stream only
    (an event or a stream the host refuses, a body over its limit).
    """

    def __init__(
        self, message: str, *, status: int, code: str, scope: Literal["host", "stream"]
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.scope = scope

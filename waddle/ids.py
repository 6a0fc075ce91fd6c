"""Run and stream ids: generation and the one validity rule (ids become paths)."""

from __future__ import annotations

import re
import secrets

from waddle.errors import InvalidIdError

# The one id rule; everything else (messages, JSON Schema, OpenAPI) is derived from it.
ID_CHARS = "A-Za-z0-9._-"
ID_REGEX = rf"^[A-Za-z0-9][{ID_CHARS}]{{0,127}}$"
ID_RULE = f"ids match {ID_REGEX} and are never '.' or '..'"
ID_PATTERN = re.compile(ID_REGEX)
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
RUN_ID_LENGTH = 12
# The highest rank a stream may have: the store keeps ranks in 32-bit integer columns.
MAX_RANK = 2**31 - 1


def is_valid_id(value: object) -> bool:
    """True when ``value`` is safe as a single path component under the log root."""
    return (
        isinstance(value, str)
        and ID_PATTERN.fullmatch(value) is not None
        and value not in (".", "..")
    )


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if valid, else raise ``InvalidIdError`` naming the rule."""
    if not is_valid_id(value):
        raise InvalidIdError(f"invalid {what} {value!r}: {ID_RULE}")
    return value  # type: ignore[return-value]


def new_run_id() -> str:
    """A random run id: 12 base-36 characters, about 62 bits.

    wandb uses 8 characters (41 bits), where an organisation with a million runs has a
    roughly one-in-six chance of a collision; 12 characters make that about 1e-7.
    """
    return "".join(secrets.choice(_ALPHABET) for _ in range(RUN_ID_LENGTH))


def stream_id(run_id: str, rank: int) -> str:
    """Rank 0 keeps the plain run id; other ranks write ``<run_id>.<rank>``."""
    return run_id if rank == 0 else f"{run_id}.{rank}"


def run_id_of_stream(stream: str) -> str:
    """The run a stream belongs to: the stream id without a trailing ``.<rank>``.

    Digits above ``MAX_RANK`` are no rank (no process ever had it): such a stream is a run
    of its own, so its rank always fits the store.
    """
    head, dot, tail = stream.rpartition(".")
    is_rank = bool(dot and head and tail.isdigit()) and int(tail) <= MAX_RANK
    return head if is_rank else stream

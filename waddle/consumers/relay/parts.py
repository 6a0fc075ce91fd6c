"""A stream's share of a relay request (``Part``), and the placeholders for lost seqs.

The host takes a stream only without gaps. A seq the relay's log lost (a corrupt line
its reader skipped, a removed segment) is sent as a ``skipped`` event naming the loss,
so every later event still reaches the host, which quarantines the placeholder; a gap
of more than ``MAX_SKIPPED`` seqs is left for the sender to park the stream at.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from waddle.event_types import Event, SkippedEvent
from waddle.eventlog.record import encode

# The most seqs in a row that a relay fills with ``skipped`` placeholders; a longer gap
# parks the stream.
MAX_SKIPPED = 10_000
_HOST = socket.gethostname()


@dataclass(frozen=True, slots=True)
class Part:
    """One stream's share of a multi-stream request: its events (seq order, at least one)
    and their NDJSON lines, as the log holds them or encoded again."""

    stream: str
    events: list[Event]
    lines: bytes

    @classmethod
    def of(cls, stream: str, events: Sequence[Event], lines: bytes | None = None) -> Part:
        """The part of ``events``; ``lines`` are their lines read from the log, if known
        (gaps are filled with placeholders, which re-encodes)."""
        filled = fill_gaps(events)
        if lines is None or len(filled) != len(events):
            lines = b"".join(map(encode, filled))
        return cls(stream, filled, lines)

    @property
    def gapless(self) -> bool:
        """Whether the seqs rise by one throughout (else a gap too long to fill is left)."""
        return self.events[-1]["seq"] - self.events[0]["seq"] + 1 == len(self.events)


def fill_gaps(events: Sequence[Event]) -> list[Event]:
    """``events`` with a ``skipped`` placeholder for each seq missing between two of them
    (gaps of at most ``MAX_SKIPPED``; a longer one is left for the host's 409 to show)."""
    if not events or events[-1]["seq"] - events[0]["seq"] + 1 == len(events):
        return list(events)  # seqs only rise: no gap when they rise by one overall
    filled: list[Event] = []
    for event in events:
        if (
            filled
            and event["seq"] - filled[-1]["seq"] > 1
            and fillable(filled[-1]["seq"] + 1, event)
        ):
            filled += placeholders(filled[-1]["seq"] + 1, event)
        filled.append(event)
    return filled


def fillable(first: int, following: Event) -> bool:
    """Whether placeholders may stand for the seqs from ``first`` to ``following``'s."""
    return following["seq"] - first <= MAX_SKIPPED


def placeholders(first: int, following: Event) -> Iterator[SkippedEvent]:
    """A ``skipped`` event for each seq from ``first`` up to the seq of ``following``.

    Their ``ts`` is that of ``following``, so a placeholder sent again is the same line.
    """
    reason = (
        f"the relay on {_HOST} had no event for this seq in its log (a corrupt line its "
        "reader skipped, or a removed segment); the events after it were relayed"
    )
    for seq in range(first, following["seq"]):
        yield {"seq": seq, "ts": following["ts"], "type": "skipped", "reason": reason}

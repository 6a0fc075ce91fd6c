"""What a resumed run needs from its own stream: config, next step, summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from waddle.eventlog.reader import LogReader, Offset


@dataclass
class Replayed:
    """The state of a stream as its events left it."""

    config: dict[str, Any] = field(default_factory=dict)
    next_step: int = 0
    last_values: dict[str, Any] = field(default_factory=dict)
    explicit_summary: dict[str, Any] = field(default_factory=dict)


def replay_stream(root: Path, stream: str) -> Replayed:
    """Read a whole stream once and fold it into the state a resumed Run continues from."""
    reader = LogReader(root)
    state = Replayed()
    offset = Offset()
    while True:
        batch = reader.read(stream, offset)
        if batch.offset == offset:
            return state
        offset = batch.offset
        for event in batch.events:
            if event["type"] == "metrics":
                state.next_step = max(state.next_step, event["step"] + 1)
                state.last_values.update(event["data"])
            elif event["type"] == "run" or event["type"] == "config":
                state.config.update(event["config"])
            elif event["type"] == "summary" and not event.get("final"):
                state.explicit_summary.update(event["summary"])

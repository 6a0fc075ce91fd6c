"""Write a benchmark's backlog through the real producer: several runs of metric events."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

Payload = Callable[[random.Random, int], dict[str, Any]]


def write_backlog(
    root: Path, events: int, runs: int, segment_bytes: int, payload: Payload, prefix: str
) -> None:
    """``events`` metrics events in all, split over ``runs`` runs ``<prefix>0``, ``<prefix>1``…

    ``payload(rng, step)`` makes each logged dict; the generator is seeded, so every
    invocation writes the same values.
    """
    import waddle

    rng = random.Random(7)
    for index in range(runs):
        run = waddle.init(
            project="bench",
            id=f"{prefix}{index}",
            root=root,
            system_metrics=False,
            segment_bytes=segment_bytes,
        )
        for step in range(events // runs):
            run.log(payload(rng, step))
        run.finish()

"""A real training process for the daemon tests (not collected by pytest).

    python load.py ROOT RUNS EVENTS SEGMENT_BYTES CHUNK PAUSE

Starts RUNS runs (ids load0, load1, ...) through ``waddle.init`` and logs EVENTS steps to
each, CHUNK steps per run at a time with PAUSE seconds between chunks, then finishes
them. ``payload`` says what a step logs; the tests recompute expectations from it.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any


def payload(step: int) -> dict[str, Any]:
    data: dict[str, Any] = {"loss": 1.0 / (step + 1), "acc": step % 97, "opt": {"lr": 1e-3}}
    if step % 1000 == 999:
        data["loss"] = math.nan
    if step % 100 == 0:
        data["note"] = f"checkpoint {step}"
    return data


def main(argv: list[str]) -> None:
    import waddle

    root, runs, events, segment_bytes, chunk, pause = argv
    live = [
        waddle.init(
            project="load",
            id=f"load{index}",
            root=root,
            system_metrics=False,
            segment_bytes=int(segment_bytes),
            reinit="create_new",  # all live at once: a second init must not finish the first
        )
        for index in range(int(runs))
    ]
    for start in range(0, int(events), int(chunk)):
        for run in live:
            for step in range(start, min(start + int(chunk), int(events))):
                run.log(payload(step))
        time.sleep(float(pause))
    for run in live:
        run.finish()


if __name__ == "__main__":
    main(sys.argv[1:])

"""A real training process for the NATS tests (not collected by pytest).

    python producer.py ROOT PREFIX RUNS STEPS CHUNK PAUSE

Starts RUNS runs (ids PREFIX0, PREFIX1, ...; rank from $RANK) through ``waddle.init`` and
logs STEPS steps to each, CHUNK steps per run at a time with PAUSE seconds between
chunks, then finishes them.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> None:
    import waddle

    root, prefix, runs, steps, chunk, pause = argv
    live = [
        waddle.init(
            project=f"proj-{prefix}",
            id=f"{prefix}{index}",
            root=root,
            system_metrics=False,
            reinit="create_new",
        )
        for index in range(int(runs))
    ]
    for start in range(0, int(steps), int(chunk)):
        for index, run in enumerate(live):
            for step in range(start, min(start + int(chunk), int(steps))):
                run.log({"loss": 1.0 / (step + 1), "acc": (step * (index + 3)) % 97})
        time.sleep(float(pause))
    for run in live:
        run.finish()


if __name__ == "__main__":
    main(sys.argv[1:])

"""A real training process for the NATS tests (not collected by pytest).

    python producer.py ROOT PREFIX RUNS STEPS CHUNK PAUSE [RELEASE]

Starts RUNS runs (ids PREFIX0, PREFIX1, ...; rank from $RANK) through ``waddle.init`` and
logs STEPS steps to each, CHUNK steps per run at a time with PAUSE seconds between
chunks, then finishes them: once the file RELEASE exists, if given (so that the runs are
live until the test says, however slow the machine).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# A RELEASE never created (a test that failed) does not keep this process for good.
RELEASE_TIMEOUT_S = 600.0


def main(argv: list[str]) -> None:
    import waddle

    root, prefix, runs, steps, chunk, pause, *release = argv
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
    deadline = time.monotonic() + RELEASE_TIMEOUT_S
    while release and not Path(release[0]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for run in live:
        run.finish()


if __name__ == "__main__":
    main(sys.argv[1:])

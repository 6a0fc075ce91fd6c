"""``waddle-consume`` that SIGKILLs itself just before its Nth rename into the lake: a
real process killed at a point the test chooses, not one that timing chooses.

    python killed.py N BATCH_RUNS WADDLE-CONSUME-ARGS...   (the arguments name --lake)

BATCH_RUNS replaces the lake consumer's batch size, so that a few runs make several
batches. Not collected by pytest.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from waddle.cli import parser
from waddle.consumers.lake import consumer


def main(kill_at: int, batch_runs: int, args: list[str]) -> int:
    consumer.BATCH_RUNS = batch_runs
    lake = Path(args[args.index("--lake") + 1]).absolute()
    replace = os.replace
    renames = 0

    def dies_at_the_nth(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        nonlocal renames
        if Path(target).is_relative_to(lake):
            renames += 1
            if renames == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        replace(source, target)

    os.replace = dies_at_the_nth
    return parser.consume_main(args)


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))

"""A training process for the tests that must kill, lock out or starve a real producer.

Run as ``python producer.py MODE ARGS...``:

* ``hold ROOT STREAM EVENTS [fork]``: open a ``StreamWriter``, append EVENTS events, with
  ``fork`` fork a child that only sleeps (as DataLoader or multiprocessing workers do),
  print the pids (the writer's first), then hold the stream until stdin closes.
* ``loop ROOT RUN_ID SEGMENT_BYTES COUNT``: ``waddle.init(resume="allow")``, then log
  ``payload(step)`` COUNT times (forever when COUNT < 0), printing each step once its
  ``log()`` has returned; finish.
* ``spin ROOT RUN_ID``: ``waddle.init(resume="allow")``, log ``{"i": 0}``, print
  ``ready``, then log ``{"i": i}`` in a loop as tight as Python allows, forever: a
  SIGINT (Ctrl-C) then lands inside ``log()`` most of the time, often inside the write
  itself. ``ready`` comes after a first ``log()`` has returned, so however late the
  process gets the CPU, the run has a value (a summary to write at finish) when the
  SIGINT comes; and SIGINT raises KeyboardInterrupt even where the test runner was
  started with SIGINT ignored (a background job of a non-interactive shell).
* ``disk-full ROOT RUN_ID KEPT HEADROOM FAILING``: log KEPT events, then cap the file
  size (RLIMIT_FSIZE, SIGXFSZ ignored) at the current segment size + HEADROOM bytes,
  log FAILING more events, finish, and exit 0.
* ``batch-full ROOT STREAM HEADROOM``: ``append_events`` a batch of 3, cap the file size
  at the segment size + HEADROOM bytes, try a batch of 5, lift the cap, append a batch
  of 2 with the same first seq, and print what each call returned and the drop counts
  as JSON.

Not collected by pytest; tests load ``payload`` from here to recompute what was logged.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

BLOB = "x" * 1000


def payload(step: int) -> dict[str, Any]:
    """What the loop logs at ``step``: deterministic, with every kind of value."""
    return {
        "loss": 1.0 / (step + 1),
        "step_copy": step,
        "even": step % 2 == 0,
        "grad": {"norm": math.nan if step % 5 == 0 else step * 0.5, "max": math.inf},
        "hist": [step, -math.inf, 0.25],
        "tag": f"ü-{step}",
    }


def hold(root: str, stream: str, events: str, fork: str = "") -> None:
    from waddle.eventlog.writer import StreamWriter

    writer = StreamWriter(Path(root) / "log" / stream)
    for step in range(int(events)):
        writer.append("metrics", {"step": step, "data": payload(step)})
    pids = [os.getpid()]
    if fork == "fork":
        ready_read, ready_write = os.pipe()
        child = os.fork()
        if child == 0:  # the at-fork handlers have run once fork() returns here
            os.write(ready_write, b"1")
            time.sleep(60)
            os._exit(0)
        os.read(ready_read, 1)
        pids.append(child)
    print(*pids, flush=True)
    sys.stdin.read()
    writer.close()


def loop(root: str, run_id: str, segment_bytes: str, count: str) -> None:
    import waddle

    run = waddle.init(
        project="fault",
        root=root,
        id=run_id,
        resume="allow",
        system_metrics=False,
        segment_bytes=int(segment_bytes),
    )
    remaining = int(count)
    while remaining != 0:
        step = run.step
        run.log(payload(step))
        print(step, flush=True)
        remaining -= 1
    run.finish()


def spin(root: str, run_id: str) -> None:
    import waddle

    signal.signal(signal.SIGINT, signal.default_int_handler)
    run = waddle.init(project="fault", root=root, id=run_id, resume="allow", system_metrics=False)
    log = run.log
    log({"i": 0})
    print("ready", flush=True)
    i = 1
    while True:
        log({"i": i})
        i += 1


def disk_full(root: str, run_id: str, kept: str, headroom: str, failing: str) -> None:
    import waddle

    run = waddle.init(project="disk-full", root=root, id=run_id, system_metrics=False)
    for _ in range(int(kept)):
        run.log({"blob": BLOB})
    segment = Path(root) / "log" / run.stream / f"{0:020d}.ndjson"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = segment.stat().st_size + int(headroom)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    for _ in range(int(failing)):
        run.log({"blob": BLOB})
    run.finish()


def batch_full(root: str, stream: str, headroom: str) -> None:
    from waddle.eventlog.writer import StreamWriter

    def batch(first: int, count: int) -> list[dict[str, Any]]:
        return [
            {"seq": seq, "ts": 1.0, "type": "metrics", "step": seq, "data": {"blob": BLOB}}
            for seq in range(first, first + count)
        ]

    writer = StreamWriter(Path(root) / "log" / stream)
    kept = writer.append_events(batch(0, 3))
    segment = Path(root) / "log" / stream / f"{0:020d}.ndjson"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (segment.stat().st_size + int(headroom), hard))
    failed = writer.append_events(batch(3, 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    after = writer.append_events(batch(3, 2))
    writer.close()
    print(json.dumps({"returned": [kept, failed, after], "dropped": writer.dropped}))


if __name__ == "__main__":
    modes = {
        "hold": hold,
        "loop": loop,
        "spin": spin,
        "disk-full": disk_full,
        "batch-full": batch_full,
    }
    modes[sys.argv[1]](*sys.argv[2:])

"""One tracker, one workload, one fresh process: ``python -m peers.worker NAME WORKLOAD N DIR``.

A fresh process per measurement keeps import cost, peak RSS and anything a tracker
leaves running from leaking into the next row. The tracker is imported first, before
numpy or anything heavy of ours, so its import time is what a cold script would pay.

Its own output and the tracker's chatter go to ``DIR/../NAME.log``; the one JSON line
of results goes to the descriptor that was stdout at start, written after ``finish``
returned and before interpreter exit, so the parent can time what exit costs.

Workloads:
- ``log``: N calls of 8 random floats with an increasing step; each call timed alone.
  The dict is built outside the timed region: the caller pays for it with any tracker.
- ``train``: N steps of about 1 ms of single-threaded numpy, then log() of 8 values
  taken from the result; only the whole loop is timed. The same loop runs first with
  a no-op in place of log(), in the same process just before the tracker starts: the
  baseline shares the process, its imports and (to within seconds) the machine's load
  with the measured loop, so a noisy neighbour rarely lands on one and not the other.
"""

from __future__ import annotations

import importlib
import os
import random
import resource
import sys
import time
from pathlib import Path

from .trackers import LogFn, tracker

KEYS = tuple(f"k{i}" for i in range(8))
MATRIX = 320  # one 320x320 float64 matmul is about 1 ms on one core of the bench VM


def log_loop(log: LogFn, n: int) -> dict[str, float]:
    """Time each log() call; per-call figures in microseconds."""
    rnd = random.Random(0).random
    clock = time.perf_counter_ns
    durations = [0] * n
    for i in range(n):
        data = dict(zip(KEYS, [rnd() for _ in KEYS], strict=True))
        t0 = clock()
        log(data, step=i)
        durations[i] = clock() - t0
    if not n:
        return {}
    ordered = sorted(durations)
    return {
        "log_mean_us": sum(durations) / n / 1e3,
        "log_p50_us": ordered[n // 2] / 1e3,
        "log_p99_us": ordered[min(n - 1, int(n * 0.99))] / 1e3,
        "log_max_us": ordered[-1] / 1e3,
    }


def train_loop(log: LogFn, n: int) -> float:
    """Milliseconds per step of a loop that does numpy work, then logs what it made."""
    import numpy as np

    rng = np.random.default_rng(0)
    x, w = rng.random((MATRIX, MATRIX)), rng.random((MATRIX, MATRIX))
    for _ in range(20):  # warm caches and allocator so the first loop is not penalised
        x @ w
    t0 = time.perf_counter()
    for i in range(n):
        h = x @ w
        log(dict(zip(KEYS, h[0, :8].tolist(), strict=True)), step=i)
    return (time.perf_counter() - t0) * 1e3 / max(n, 1)


def main(name: str, workload: str, n: int, workdir: Path) -> None:
    """Import, start, loop, finish; report on the saved stdout descriptor."""
    results = os.dup(1)
    with open(workdir.parent / f"{workdir.name}.log", "ab") as chatter:
        os.dup2(chatter.fileno(), 1)
        os.dup2(chatter.fileno(), 2)
    row = tracker(name)
    t0 = time.perf_counter()
    if row.module:
        importlib.import_module(row.module)
    import_ms = (time.perf_counter() - t0) * 1e3
    figures = {"import_ms": import_ms}
    if workload == "train":
        figures["baseline_step_ms"] = train_loop(lambda data, step: None, n)
    t1 = time.perf_counter()
    log = row.start(workdir)
    t2 = time.perf_counter()
    if workload == "log":
        figures |= log_loop(log, n)
    else:
        figures["step_ms"] = train_loop(log, n)
        figures["slowdown_pct"] = (figures["step_ms"] / figures["baseline_step_ms"] - 1) * 100
    t3 = time.perf_counter()
    row.finish()
    t4 = time.perf_counter()
    figures |= {
        "init_ms": (t2 - t1) * 1e3,
        "finish_ms": (t4 - t3) * 1e3,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    import json  # only now, so that the json floor's import above is timed cold

    os.write(results, (json.dumps(figures) + "\n").encode())
    os.close(results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))

"""``waddle demo``: write example runs through the real producer.

It trains nothing: a loss that decays with noise, an accuracy that climbs, a learning
rate schedule and one NaN spike, so that a fresh install has something to show in the
dashboard within a second. The values come from a seeded generator: the same every time.
``serve --demo`` also keeps a second run logging at a human pace, to show live updates;
when the server is stopped, that run is recorded as ``killed`` (it did not run to its end).
"""

from __future__ import annotations

import math
import random
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import waddle
from waddle.producer.run import Run

if TYPE_CHECKING:
    from waddle.web.settings import Settings

DEFAULT_STEPS = 300


def write_demo(
    root: Path,
    *,
    steps: int = DEFAULT_STEPS,
    project: str = "demo",
    pace: float = 0.0,
    stop: threading.Event | None = None,
) -> Run:
    """Log one demo run into the Waddle folder ``root`` and finish it.

    With ``pace``, wait that many seconds between steps (and stop early when ``stop`` is
    set, finishing the run as ``killed``), as a live training run would.
    """
    stop = stop or threading.Event()
    rng = random.Random(7)
    learning_rate = 3e-3
    config = {
        "learning_rate": learning_rate,
        "batch_size": 64,
        "optimizer": "adam",
        "model": "mlp-2x256",
    }
    run = waddle.init(
        project=project,
        root=root,
        config=config,
        tags=["demo"],
        notes="written by `waddle demo`",
        system_metrics=False,
    )
    best = 0.0
    stopped = False
    try:
        for step in range(steps):
            progress = step / max(steps - 1, 1)
            loss = 2.3 * math.exp(-4 * progress) + 0.05 + rng.gauss(0, 0.03)
            metrics = {
                "train/loss": float("nan") if step == steps // 3 else loss,
                "train/lr": learning_rate * 0.5 * (1 + math.cos(math.pi * progress)),
            }
            if step % 10 == 9:
                accuracy = min(
                    0.99, 0.1 + 0.85 * (1 - math.exp(-5 * progress)) + rng.gauss(0, 0.01)
                )
                best = max(best, accuracy)
                metrics["val/accuracy"] = accuracy
                metrics["val/loss"] = loss * 1.1
            run.log(metrics, step=step)
            if pace and stop.wait(pace):
                stopped = True
                break
        run.summary["best/val_accuracy"] = best
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish(status="killed" if stopped else None)
    return run


def write_announced(root: Path, steps: int = DEFAULT_STEPS) -> str:
    """``waddle demo``: write a demo run and say where it went; its id."""
    run = write_demo(root, steps=steps)
    print(f"Wrote demo run {run.id} ({steps} steps) to {root}", flush=True)
    return run.id


def serve_demo(settings: Settings) -> int:
    """``waddle serve --demo``: refuse a busy folder first, then write a demo run, keep a
    second one logging live while the server runs, and serve; the exit code."""
    from waddle.web.server import check_free, serve

    check_free(settings)
    write_announced(settings.root)
    stop = threading.Event()
    live = threading.Thread(
        target=write_demo,
        args=(settings.root,),
        kwargs={"steps": 3000, "pace": 0.2, "stop": stop},
        name="waddle-live-demo",
        daemon=True,
    )
    live.start()
    try:
        return serve(settings)
    finally:
        stop.set()
        live.join(timeout=5)

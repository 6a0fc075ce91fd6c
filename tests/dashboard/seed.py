"""Runs for the dashboard tests, written by the real producer in a child process.

Run as ``python seed.py ROOT``: it prints one JSON object mapping each run's name to its
id. Values come from a seeded generator, so screenshots stay the same from run to run.
The "crashed" run's process dies of SIGKILL after logging, leaving it running with no
finish: the dashboard shows it as stale.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time

import waddle

PROJECT = "vision"
XSS_NAME = "<img src=x onerror=alert(1)>"
STEPS = 400


def train(root: str, name: str, config: dict, tags: list[str], seed: int, **finish: object) -> str:
    rng = random.Random(seed)
    run = waddle.init(
        project=PROJECT, name=name, root=root, config=config, tags=tags, system_metrics=False
    )
    speed = 3.0 * config["lr"] / 3e-3 * (1.2 if config.get("width", 256) > 256 else 1.0)
    for step in range(STEPS):
        progress = step / STEPS
        loss = 2.3 * math.exp(-speed * progress) + 0.08 + rng.gauss(0, 0.04)
        metrics = {
            "train/loss": loss,
            "train/acc": 1 - loss / 2.5,
            "train/lr": config["lr"] * 0.5 * (1 + math.cos(math.pi * progress)),
        }
        if step % 20 == 19:
            metrics["val/loss"] = loss * 1.15 + rng.gauss(0, 0.02)
            metrics["val/acc"] = 1 - metrics["val/loss"] / 2.5
        run.log(metrics)
    run.summary["best/val_acc"] = round(1 - (2.3 * math.exp(-speed) + 0.08) * 1.15 / 2.5, 4)
    run.finish(**finish)
    return run.id


def with_system_metrics(root: str) -> str:
    """A short run that samples system metrics a few times."""
    run = waddle.init(
        project=PROJECT,
        name="profiled",
        root=root,
        config={"lr": 1e-3, "batch_size": 32, "optimizer": "sgd"},
        tags=["profiling"],
        system_interval=0.1,
    )
    for step in range(60):
        run.log({"train/loss": 1 / (1 + step)})
        time.sleep(0.01)
    time.sleep(0.5)
    run.finish()
    return run.id


def main(root: str) -> None:
    ids = {
        "baseline": train(
            root, "baseline", {"lr": 3e-3, "batch_size": 64, "optimizer": "adam"}, ["base"], 1
        ),
        "wide": train(
            root,
            "wide",
            {"lr": 3e-3, "batch_size": 128, "optimizer": "adam", "width": 512},
            ["base", "wide"],
            2,
        ),
        "slow": train(
            root,
            "slow",
            {"lr": 1e-3, "batch_size": 64, "optimizer": "sgd"},
            ["sweep"],
            3,
            exit_code=1,
        ),
        "profiled": with_system_metrics(root),
    }
    xss = waddle.init(
        project=PROJECT,
        name=XSS_NAME,
        root=root,
        config={"<b>key</b>": "<script>alert(2)</script>"},
        tags=["<i>tag</i>"],
        system_metrics=False,
    )
    xss.log({"<svg onload=alert(3)>": 1.0})
    xss.finish()
    ids[XSS_NAME] = xss.id
    crashed = waddle.init(
        project=PROJECT,
        name="crashed",
        root=root,
        config={"lr": 1e-2, "batch_size": 64},
        system_metrics=False,
    )
    crashed.log({"train/loss": 2.0})
    ids["crashed"] = crashed.id
    print(json.dumps(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1])

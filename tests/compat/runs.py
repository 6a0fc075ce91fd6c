"""What a complete run of the tiny HF and Lightning trainings must hold in the Waddle log.

Shared by the ``waddle run`` tests (the framework's own wandb integration under the
shim) and the native integration tests (``WaddleCallback``, ``WaddleLogger``): the same
training must leave the same facts whichever way it came in. ``native`` adds what only
the native integrations promise today: Waddle's ``step`` is the global step.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest

from tests.compat.scripts import tiny
from tests.helpers import child_env, of_type

SCRIPTS = Path(__file__).resolve().parent / "scripts"
LAUNCHER = SCRIPTS / "launcher.py"
FRAMEWORK_TIMEOUT_S = 180.0  # a few seconds on a quiet machine; imports dominate


def framework_env(**extra: str) -> dict[str, str]:
    """The test's environment for a child, offline, with no WANDB_* variable inherited."""
    drop = tuple(name for name in os.environ if name.startswith("WANDB_"))
    return child_env(drop=drop, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", **extra)


def run_launched(
    script: str, *args: str, cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``waddle run -- python SCRIPT ARGS`` as a real process tree, bounded in time."""
    command = [sys.executable, str(LAUNCHER), sys.executable, str(SCRIPTS / script), *args]
    tree = start_tree(command, cwd=cwd, env=env)
    code, out, err = finish_tree(tree, FRAMEWORK_TIMEOUT_S)
    return subprocess.CompletedProcess(command, code, out, err)


def start_tree(command: list[str], *, env: dict[str, str], cwd: Path | None = None) -> Popen:
    """Start ``command`` in a session of its own (no controlling terminal, as under a
    scheduler), so that the whole tree can be killed if the test fails."""
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        start_new_session=True,
    )


def finish_tree(tree: Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for the tree's first process; on timeout kill the whole tree (a launcher's
    command keeps the output pipes open) and fail. Returns rc, stdout, stderr."""
    try:
        out, err = tree.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(tree)
        tree.communicate()
        pytest.fail(f"{tree.args} did not exit within {timeout}s")
    return tree.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def kill_tree(tree: Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(tree.pid, signal.SIGKILL)


def folded_config(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's config: the ``run`` event's, then each ``config`` event over it."""
    config: dict[str, Any] = {}
    for event in events:
        if event["type"] in ("run", "config"):
            config.update(event["config"])
    return config


def points(events: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The ``metrics`` events that carry ``key``."""
    return [event for event in of_type(events, "metrics") if key in event["data"]]


def final_summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    finals = [event for event in of_type(events, "summary") if event.get("final")]
    assert finals, "the run has no final summary"
    return finals[-1]["summary"]


def assert_step_metric(events: list[dict[str, Any]], step_metric: str) -> None:
    """The framework declared its global step as every metric's x axis (define_metric)."""
    defined = {(e["metric"], e["step_metric"]) for e in of_type(events, "define_metric")}
    assert (step_metric, None) in defined and ("*", step_metric) in defined, defined


def assert_finished(events: list[dict[str, Any]]) -> None:
    assert events[-1]["type"] == "finish", f"the log ends with {events[-1]}, not a finish"
    assert events[-1]["status"] == "finished", events[-1]


def assert_hf_run(events: list[dict[str, Any]], *, native: bool) -> None:
    """The tiny GPT-2 Trainer run: model and training config, train and eval curves on
    ``train/global_step``, the end-of-training summary, and a clean finish."""
    config = folded_config(events)
    assert (config["n_layer"], config["n_embd"], config["vocab_size"]) == (2, 32, 100)
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"}  # int keys, stringified
    assert config["learning_rate"] == tiny.HF_LEARNING_RATE
    assert config["max_steps"] == tiny.HF_MAX_STEPS
    assert config["model/num_parameters"] > 0

    train = points(events, "train/loss")
    steps = range(tiny.HF_LOGGING_STEPS, tiny.HF_MAX_STEPS + 1, tiny.HF_LOGGING_STEPS)
    assert [p["data"]["train/global_step"] for p in train] == list(steps)
    for point in train:
        assert math.isfinite(point["data"]["train/loss"])
        assert point["data"]["train/learning_rate"] > 0
    evaluation = points(events, "eval/loss")
    steps = range(tiny.HF_EVAL_STEPS, tiny.HF_MAX_STEPS + 1, tiny.HF_EVAL_STEPS)
    assert [p["data"]["train/global_step"] for p in evaluation] == list(steps)
    if native:
        for point in train + evaluation:
            assert point["step"] == point["data"]["train/global_step"], point

    summary = final_summary(events)
    assert summary["train/loss"] == train[-1]["data"]["train/loss"]
    assert summary["eval/loss"] == evaluation[-1]["data"]["eval/loss"]
    assert summary["train_loss"] > 0 and summary["train_runtime"] >= 0
    assert_step_metric(events, "train/global_step")
    assert_finished(events)


def assert_lightning_run(events: list[dict[str, Any]], *, native: bool) -> None:
    """The tiny Lightning run: hyperparameters, train and val curves on
    ``trainer/global_step``, a summary, and a clean finish."""
    config = folded_config(events)
    assert {key: config.get(key) for key in tiny.LIGHTNING_HPARAMS} == tiny.LIGHTNING_HPARAMS

    train = points(events, "train/loss")
    total = tiny.LIGHTNING_EPOCHS * tiny.LIGHTNING_BATCHES
    assert len(train) == total // tiny.LIGHTNING_LOG_EVERY
    train_steps = [p["data"]["trainer/global_step"] for p in train]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == total - 1
    val = points(events, "val/loss")
    epoch_ends = [
        tiny.LIGHTNING_BATCHES * (epoch + 1) - 1 for epoch in range(tiny.LIGHTNING_EPOCHS)
    ]
    assert [p["data"]["trainer/global_step"] for p in val] == epoch_ends
    assert [p["data"]["epoch"] for p in val] == list(range(tiny.LIGHTNING_EPOCHS))
    if native:
        for point in train + val:
            assert point["step"] == point["data"]["trainer/global_step"], point

    summary = final_summary(events)
    assert summary["val/loss"] == val[-1]["data"]["val/loss"]
    assert_step_metric(events, "trainer/global_step")
    assert_finished(events)

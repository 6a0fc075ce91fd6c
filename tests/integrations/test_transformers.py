"""``WaddleCallback`` with a real Hugging Face ``Trainer`` (tiny GPT-2, CPU, no download)."""

from __future__ import annotations

from pathlib import Path

import pytest

import waddle
from tests.compat.runs import assert_hf_run
from tests.compat.scripts import tiny
from tests.helpers import of_type, read_events

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from waddle.integrations.transformers import WaddleCallback


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_callback_records_config_metrics_on_the_global_step_summary_and_finish(
    tmp_path: Path,
) -> None:
    trainer = tiny.gpt2_trainer(tmp_path / "out", report_to=[], callbacks=[WaddleCallback()])
    trainer.train()
    assert waddle.run is None  # the callback finished the run it started
    assert_hf_run(read_events(), native=True)


def test_evaluate_after_train_continues_the_same_run(tmp_path: Path) -> None:
    trainer = tiny.gpt2_trainer(tmp_path / "out", report_to=[], callbacks=[WaddleCallback()])
    trainer.train()
    trainer.evaluate()
    waddle.finish()
    events = read_events()
    assert [event["resumed"] for event in of_type(events, "run")] == [False, True]
    assert len(of_type(events, "finish")) == 2
    first_finish = events.index(of_type(events, "finish")[0])
    last_eval = [e for e in of_type(events, "metrics") if "eval/loss" in e["data"]][-1]
    assert events.index(last_eval) > first_finish
    assert last_eval["step"] == last_eval["data"]["train/global_step"] == tiny.HF_MAX_STEPS


def test_a_run_the_script_started_is_used_and_left_open(tmp_path: Path) -> None:
    run = waddle.init(project="mine", system_metrics=False)
    trainer = tiny.gpt2_trainer(tmp_path / "out", report_to=[], callbacks=[WaddleCallback()])
    trainer.train()
    assert waddle.run is run
    run.log({"after": 1.0})
    run.finish()
    events = read_events()
    assert events[0]["project"] == "mine" and len(of_type(events, "run")) == 1
    assert_hf_run(events, native=True)

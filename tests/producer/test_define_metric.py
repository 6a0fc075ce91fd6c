"""``define_metric``: recorded in the log, honoured by the summary, and ``step_sync``."""

from __future__ import annotations

import math
from typing import Any

import pytest

import waddle
from tests.helpers import of_type, read_events, waddle_dir
from waddle.errors import UsageError


def summary_after(definitions: list[dict[str, Any]], logged: list[dict[str, Any]]) -> Any:
    run = waddle.init(id="defs", system_metrics=False)
    for definition in definitions:
        run.define_metric(**definition)
    for data in logged:
        run.log(data)
    during = dict(run.summary)
    run.finish()
    final = of_type(read_events(), "summary")[-1]
    assert final["final"] and final["summary"] == during
    return during


def test_a_definition_is_a_define_metric_event_with_every_field() -> None:
    run = waddle.init(id="defs", system_metrics=False)
    waddle.define_metric("train/global_step")
    run.define_metric("eval/*", step_metric="train/global_step", summary="min", goal="minimize")
    run.define_metric("lr", hidden=True)
    run.finish()
    assert [
        {k: e[k] for k in ("metric", "step_metric", "summary", "hidden", "goal")}
        for e in of_type(read_events(), "define_metric")
    ] == [
        {"metric": "train/global_step", "step_metric": None, "summary": None, "hidden": False,
         "goal": None},
        {"metric": "eval/*", "step_metric": "train/global_step", "summary": "min",
         "hidden": False, "goal": "minimize"},
        {"metric": "lr", "step_metric": None, "summary": None, "hidden": True, "goal": None},
    ]  # fmt: skip


def test_summary_keeps_min_max_mean_last_or_nothing_as_defined() -> None:
    summary = summary_after(
        [
            {"name": "loss", "summary": "min"},
            {"name": "acc", "summary": "max"},
            {"name": "speed", "summary": "mean"},
            {"name": "noise", "summary": "none"},
            {"name": "lr", "summary": "last"},
        ],
        [
            {"loss": 3.0, "acc": 0.5, "speed": 1, "noise": 9, "lr": 0.1, "other": 1},
            {"loss": 1.0, "acc": 0.9, "speed": 2, "noise": 8, "lr": 0.2, "other": 2},
            {"loss": 2.0, "acc": 0.7, "speed": 6, "noise": 7, "lr": 0.3},
        ],
    )
    assert summary == {"loss": 1.0, "acc": 0.9, "speed": 3.0, "lr": 0.3, "other": 2}


def test_a_name_beats_a_glob_and_a_later_definition_replaces_an_earlier_one() -> None:
    summary = summary_after(
        [
            {"name": "eval/*", "summary": "max"},
            {"name": "eval/loss", "summary": "max"},
            {"name": "eval/loss", "summary": "min"},
            {"name": "*", "summary": "min"},  # a later glob does not beat the name
        ],
        [{"eval/loss": 2.0, "eval/acc": 0.2}, {"eval/loss": 1.0, "eval/acc": 0.1}],
    )
    assert summary == {"eval/loss": 1.0, "eval/acc": 0.1}


def test_a_nan_never_wins_min_or_max_and_text_is_kept_as_last() -> None:
    summary = summary_after(
        [{"name": "loss", "summary": "min"}, {"name": "note", "summary": "max"}],
        [{"loss": float("nan"), "note": "a"}, {"loss": 2.0, "note": "b"}, {"loss": math.nan}],
    )
    assert summary == {"loss": 2.0, "note": "b"}


def test_an_explicit_summary_value_still_wins() -> None:
    summary = summary_after(
        [{"name": "loss", "summary": "max"}], [{"loss": 1.0}, {"loss": 5.0}, {"loss": 2.0}]
    )
    assert summary == {"loss": 5.0}
    run = waddle.init(id="explicit", system_metrics=False)
    run.define_metric("loss", summary="max")
    run.log({"loss": 5.0})
    run.summary["loss"] = 0.5
    assert run.summary["loss"] == 0.5
    run.finish()


def test_step_sync_gives_a_log_lacking_the_step_metric_its_last_value() -> None:
    run = waddle.init(id="sync", system_metrics=False)
    run.define_metric("*", step_metric="global_step", step_sync=True)
    run.log({"eval/loss": 9.0})  # no global_step known yet: nothing to add
    run.log({"train/loss": 1.0, "global_step": 10})
    run.log({"eval/loss": 0.5})
    run.log({"eval/loss": 0.4, "global_step": 12})
    run.finish()
    assert [e["data"] for e in of_type(read_events(), "metrics")] == [
        {"eval/loss": 9.0},
        {"train/loss": 1.0, "global_step": 10},
        {"eval/loss": 0.5, "global_step": 10},
        {"eval/loss": 0.4, "global_step": 12},
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "metric name"),
        ({"name": "x", "summary": "best"}, "summary must be"),
        ({"name": "x", "goal": "up"}, "goal must be"),
        ({"name": "x", "step_metric": 3}, "step_metric"),
    ],
)
def test_misuse_raises_at_the_call_and_records_nothing(
    kwargs: dict[str, Any], message: str
) -> None:
    run = waddle.init(id="bad", system_metrics=False)
    with pytest.raises(UsageError, match=message):
        run.define_metric(**kwargs)
    run.finish()
    assert of_type(read_events(), "define_metric") == []


def test_a_disabled_run_and_no_run_behave_as_wandb() -> None:
    with pytest.raises(UsageError, match="init"):
        waddle.define_metric("x")
    run = waddle.init(mode="disabled")
    run.define_metric("x", summary="min")  # accepted, records nothing
    run.finish()
    assert not waddle_dir().exists()

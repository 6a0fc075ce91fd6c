"""``waddle.Api()`` in a notebook: runs read from the DuckDB store, which it first brings
up to date with the log (no ``waddle-consume`` needed after a training script)."""

from __future__ import annotations

import pytest

import waddle
from waddle.errors import UsageError


@pytest.fixture
def three_runs() -> None:
    quiet = waddle.Settings(silent=True)
    for run_id, lr, tags, losses in [
        ("slow", 0.01, ["base"], [3.0, 2.5, 2.0]),
        ("fast", 0.1, ["best"], [3.0, 1.0, 0.5, 0.4]),
    ]:
        run = waddle.init(
            project="api", id=run_id, config={"lr": lr}, tags=tags, settings=quiet,
            system_metrics=False,
        )  # fmt: skip
        for step, loss in enumerate(losses):
            run.log({"loss": loss, "acc": step / 10}, step=step * 10)
        run.finish()
    waddle.init(project="other", id="elsewhere", settings=quiet, system_metrics=False).finish()


def test_runs_of_a_project_with_config_summary_and_state(three_runs: None) -> None:
    runs = {run.id: run for run in waddle.Api().runs("api")}
    assert sorted(runs) == ["fast", "slow"]
    fast = runs["fast"]
    assert (fast.name, fast.project, fast.state, fast.path) == (
        fast.row["name"], "api", "finished", "api/fast"
    )  # fmt: skip
    assert fast.config == {"lr": 0.1}
    assert fast.summary["loss"] == 0.4
    assert fast.tags == ["best"]
    assert {run.id for run in waddle.Api().runs()} == {"fast", "slow", "elsewhere"}
    assert sorted(run.id for run in waddle.Api().runs("entity/api", per_page=50)) == [
        "fast",
        "slow",
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"config.lr": 0.1}, ["fast"]),
        ({"config.lr": {"$gt": 0.05}}, ["fast"]),
        ({"summary_metrics.loss": {"$lte": 2.0}}, ["fast", "slow"]),
        ({"state": "finished", "tags": "base"}, ["slow"]),
        ({"$or": [{"config.lr": 0.01}, {"tags": "best"}]}, ["fast", "slow"]),
        ({"$and": [{"config.lr": {"$in": [0.01, 0.1]}}, {"config.lr": {"$ne": 0.1}}]}, ["slow"]),
        ({"config.missing": {"$gt": 1}}, []),
    ],
)
def test_filters_as_wandb_writes_them(
    three_runs: None, filters: dict[str, object], expected: list[str]
) -> None:
    assert sorted(run.id for run in waddle.Api().runs("api", filters=filters)) == expected


def test_history_by_step_with_keys_and_samples(three_runs: None) -> None:
    run = waddle.Api().run("api/fast")
    rows = run.history(pandas=False)
    assert rows == [
        {"_step": 0, "acc": 0.0, "loss": 3.0},
        {"_step": 10, "acc": 0.1, "loss": 1.0},
        {"_step": 20, "acc": 0.2, "loss": 0.5},
        {"_step": 30, "acc": 0.3, "loss": 0.4},
    ]
    assert run.history(keys=["loss"], samples=2, pandas=False) == [
        {"_step": 0, "loss": 3.0},
        {"_step": 30, "loss": 0.4},
    ]
    pd = pytest.importorskip("pandas")
    frame = run.history(keys=["loss"])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["_step", "loss"] and list(frame["loss"]) == [3.0, 1.0, 0.5, 0.4]


def test_new_runs_are_seen_by_the_next_call(three_runs: None) -> None:
    api = waddle.Api()
    assert len(api.runs("api")) == 2
    quiet = waddle.Settings(silent=True)
    waddle.init(project="api", id="later", settings=quiet, system_metrics=False).finish()
    assert len(api.runs("api")) == 3
    assert api.run("later").state == "finished"


def test_an_empty_folder_has_no_runs_and_an_unknown_run_is_a_usage_error() -> None:
    assert waddle.Api().runs("api") == []
    with pytest.raises(UsageError, match="no run"):
        waddle.Api().run("api/nope")

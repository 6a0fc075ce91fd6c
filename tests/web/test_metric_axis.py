"""``define_metric`` on the read side, and a metric against another metric as x axis.

The log is written with the raw stream writer, as a Hugging Face run through the wandb
surface leaves it: ``train/*`` and ``eval/*`` on ``train/global_step``, eval logged on
fewer (and other) internal steps than train.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.consumers.logs import open_stream, run_fields
from waddle.store import queries, schema

from .conftest import Server, start_server, wait_for_run

RUN = "hfrun"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("axis") / "root")
    writer = open_stream(server.root, RUN)
    try:
        writer.append("run", run_fields(RUN, config={"lr": 0.1}))
        for metric, summary in (("train/*", None), ("eval/*", "min"), ("train/*", "last")):
            writer.append(
                "define_metric",
                {
                    "metric": metric,
                    "step_metric": "train/global_step",
                    "summary": summary,
                    "hidden": False,
                    "goal": "minimize" if summary == "min" else None,
                },
            )
        step = 0
        for global_step in range(0, 100, 10):
            writer.append(
                "metrics",
                {
                    "step": step,
                    "data": {"train/loss": 1 / (global_step + 1), "train/global_step": global_step},
                },
            )
            step += 1
            if global_step % 30 == 0:  # eval on its own internal step, same global step
                writer.append(
                    "metrics",
                    {
                        "step": step,
                        "data": {"eval/loss": global_step / 100, "train/global_step": global_step},
                    },
                )
                step += 1
        writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    finally:
        writer.close()
    yield server
    assert server.stop() == 0, server.stderr()


def test_the_run_carries_its_metric_definitions_later_ones_replacing(server: Server) -> None:
    run = wait_for_run(server, RUN)
    assert run["metric_defs"] == {
        "train/*": {
            "step_metric": "train/global_step",
            "summary": "last",
            "hidden": False,
            "goal": None,
        },
        "eval/*": {
            "step_metric": "train/global_step",
            "summary": "min",
            "hidden": False,
            "goal": "minimize",
        },
    }


def test_a_metric_against_another_lines_up_on_the_global_step(server: Server) -> None:
    wait_for_run(server, RUN)
    reply = server.get_json(
        f"/api/runs/{RUN}/metrics?keys=train/loss,eval/loss&x_metric=train/global_step"
    )
    assert (reply["x"], reply["x_metric"]) == ("metric", "train/global_step")
    series = {s["key"]: s for s in reply["series"]}
    assert series["eval/loss"]["x"] == [0, 30, 60, 90]
    assert series["eval/loss"]["y"] == [0.0, 0.3, 0.6, 0.9]
    assert series["train/loss"]["x"] == list(range(0, 100, 10))
    by_step = server.get_json(f"/api/runs/{RUN}/metrics?keys=eval/loss")
    assert by_step["series"][0]["x"] == [1, 5, 9, 13]  # the internal steps do not line up


def test_x_metric_is_downsampled_and_ranged_like_any_series(server: Server) -> None:
    wait_for_run(server, RUN)
    reply = server.get_json(
        f"/api/runs/{RUN}/metrics?keys=train/loss&x_metric=train/global_step&x_min=20&x_max=60"
    )
    assert reply["series"][0]["x"] == [20, 30, 40, 50, 60]
    small = server.get_json(
        f"/api/runs/{RUN}/metrics?keys=train/loss&x_metric=train/global_step&max_points=4"
    )
    assert small["series"][0]["count"] == 10 and small["series"][0]["downsampled"]
    assert small["series"][0]["x"][0] == 0 and small["series"][0]["x"][-1] == 90


def test_an_old_store_gains_the_column_when_the_writer_opens_it(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    old = schema.SCHEMA.replace(",\n    metric_defs JSON\n", "\n")
    assert old != schema.SCHEMA
    con.execute(old)
    con.execute("INSERT INTO _waddle.meta VALUES ('schema_version', '2')")
    con.execute("INSERT INTO runs (run_id, status) VALUES ('r', 'finished')")
    assert queries.get_run(con, "r")["metric_defs"] == {}  # read-only readers of old files
    con.close()
    con = schema.connect(path)
    try:
        columns = [row[0] for row in con.execute("DESCRIBE runs").fetchall()]
        assert "metric_defs" in columns
        assert queries.get_run(con, "r")["metric_defs"] == {}
    finally:
        con.close()

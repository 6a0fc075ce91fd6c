"""``waddle serve --lake DIR`` (a real uvicorn on 127.0.0.1): the run list, the run and
its metric endpoints show the lake's finished runs and the server's own live runs
together; a run in both is shown as the server has it."""

from __future__ import annotations

from pathlib import Path

from tests.consumers.lake.lakes import export
from tests.consumers.logs import numbers, write_run
from tests.web.conftest import start_server, wait_for_run


def test_serve_shows_the_lakes_runs_and_its_own_live_runs(tmp_path: Path) -> None:
    elsewhere, lake, root = tmp_path / "ingester", tmp_path / "lake", tmp_path / "serve"
    write_run(elsewhere, "archived", 6, project="old")
    write_run(elsewhere, "both", 3)
    export(elsewhere, lake)
    write_run(root, "live", 4, finish=None)
    write_run(root, "both", 9)

    server = start_server(root, "--lake", str(lake))
    try:
        wait_for_run(server, "live", "running")
        wait_for_run(server, "both")
        listed = {run["run_id"]: run for run in server.get_json("/runs")["runs"]}
        assert set(listed) == {"archived", "both", "live"}
        assert (listed["archived"]["project"], listed["archived"]["last_step"]) == ("old", 5)
        assert listed["both"]["last_step"] == 8  # the server's own run wins

        assert server.get_json("/api/runs/archived/keys")["metrics"] == ["acc", "loss", "lr"]
        series = server.get_json("/api/runs/archived/metrics?key=loss")["series"][0]
        assert series["x"] == list(range(6))
        assert series["y"] == [numbers(step)["loss"] for step in range(6)]
        both = server.get_json("/api/runs/both/metrics?key=loss")["series"][0]
        assert both["x"] == list(range(9))
        record = server.get_json("/run/archived")["run"]
        assert record["status"] == "finished" and record["config"] == {"lr": 0.1}
        assert [s["stream"] for s in record["streams"]] == ["archived"]
        projects = {p["name"] for p in server.get_json("/info")["projects"]}
        assert projects == {"old", "proj"}
    finally:
        assert server.stop() == 0, server.stderr()


def test_serve_with_an_empty_lake_shows_its_runs_once_one_arrives(tmp_path: Path) -> None:
    elsewhere, lake, root = tmp_path / "ingester", tmp_path / "lake", tmp_path / "serve"
    write_run(root, "live", 2, finish=None)
    server = start_server(root, "--lake", str(lake))
    try:
        wait_for_run(server, "live", "running")
        assert [run["run_id"] for run in server.get_json("/runs")["runs"]] == ["live"]
        write_run(elsewhere, "archived", 2)
        export(elsewhere, lake)
        listed = {run["run_id"] for run in server.get_json("/runs")["runs"]}
        assert listed == {"archived", "live"}
    finally:
        assert server.stop() == 0, server.stderr()

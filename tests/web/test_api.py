"""The read endpoints against a real server, with runs written by the real producer."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from urllib.parse import quote

import orjson
import pytest

import waddle
from tests.helpers import raw_events, raw_log

from .conftest import Server, eventually, start_server, wait_for_run
from .events import run_event

STEPS = 500
SPIKE_STEP, NAN_STEP = 250, 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("api") / "root")
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="module")
def runs(server: Server) -> dict[str, str]:
    """Run "alpha" (finished, spike and NaN, system metrics), "beta" (failed), and a
    relayed run with console lines; written before the module's tests, then waited for."""
    alpha = waddle.init(
        project="alpha",
        root=server.root,
        name="the-alpha-run",
        config={"lr": 0.01, "layers": [64, 64]},
        tags=["x", "y"],
        group="g1",
        job_type="train",
        system_interval=0.05,
    )
    for step in range(STEPS):
        loss = 100.0 if step == SPIKE_STEP else (math.nan if step == NAN_STEP else 1 / (step + 1))
        data = {"loss": loss, "a,b": step}
        if step % 10 == 0:
            data["accuracy"] = step / STEPS
        alpha.log(data)
    time.sleep(0.3)  # a few system samples
    alpha.finish()
    beta = waddle.init(
        project="beta", root=server.root, name="beta-run", tags=["y"], system_metrics=False
    )
    for step in range(10):
        beta.log({"loss": float(step)})
    beta.finish(exit_code=1)
    lines = [
        {
            "seq": seq,
            "ts": time.time(),
            "type": "console",
            "stream": "stdout",
            "text": f"line {seq}\n",
        }
        for seq in range(1, 31)
    ]
    assert server.ingest("consolerun", [run_event("consolerun"), *lines]).status == 200
    wait_for_run(server, alpha.id)
    wait_for_run(server, beta.id, status="failed")
    wait_for_run(server, "consolerun", status="running")
    eventually(lambda: len(server.get_json("/api/runs/consolerun/console")["lines"]) == 30)
    eventually(lambda: server.get_json(f"/api/runs/{alpha.id}/keys")["system"], what="system")
    return {"alpha": alpha.id, "beta": beta.id, "console": "consolerun"}


def test_info_lists_projects(server: Server, runs: dict[str, str]) -> None:
    projects = {p["name"]: p for p in server.get_json("/info")["projects"]}
    assert {"alpha", "beta", "relayed"} <= set(projects)
    assert projects["alpha"]["runs"] == 1 and projects["alpha"]["last_started_at"] > 0


def test_runs_with_start_times_and_project_filter(server: Server, runs: dict[str, str]) -> None:
    every = server.get_json("/runs")["runs"]
    assert {runs["alpha"], runs["beta"]} <= {r["run_id"] for r in every}
    assert all(r["started_at"] > 0 for r in every)
    only = server.get_json("/runs?project=alpha")["runs"]
    assert [r["run_id"] for r in only] == [runs["alpha"]]
    assert server.get_json("/runs?project=" + quote("x' OR 1=1 --"))["runs"] == []


def test_run_has_config_summary_context_status_and_events(
    server: Server, runs: dict[str, str]
) -> None:
    alpha = runs["alpha"]
    body = server.get_json(f"/run/{alpha}?limit=100")
    run = body["run"]
    assert run["config"] == {"lr": 0.01, "layers": [64, 64]}
    assert run["status"] == "finished" and run["exit_code"] is None
    assert run["summary"]["loss"] == 1 / STEPS
    assert run["context"]["python"] and run["tags"] == ["x", "y"]
    assert [s["stream"] for s in run["streams"]] == [alpha]
    assert [e["seq"] for e in body["events"]] == list(range(100))
    assert body["more"] and body["next_after"] == 99
    events, after = [], -1
    for _ in range(100):
        page = server.get_json(f"/run/{alpha}?after={after}&limit=77")
        events += page["events"]
        after = page["next_after"]
        if not page["more"]:
            break
    assert events == raw_events(raw_log(server.root, alpha))  # NaN spelled "NaN"


def test_run_events_of_another_stream_are_refused(server: Server, runs: dict[str, str]) -> None:
    alpha = runs["alpha"]
    reply = server.get(f"/run/{alpha}?stream={runs['beta']}")
    assert reply.status == 400 and reply.json()["field"] == "stream"
    assert server.get_json(f"/run/{alpha}?stream={alpha}.1")["events"] == []


def test_api_runs_filters_sorting_and_pages(server: Server, runs: dict[str, str]) -> None:
    def ids(query: str) -> list[str]:
        return [r["run_id"] for r in server.get_json(f"/api/runs?{query}")["runs"]]

    assert ids("status=failed") == [runs["beta"]]
    assert ids("tag=x") == [runs["alpha"]]
    assert set(ids("tag=y")) == {runs["alpha"], runs["beta"]}
    assert ids("q=ALPHA") == [runs["alpha"]]
    assert ids("group=g1&job_type=train") == [runs["alpha"]]
    names = [r["name"] for r in server.get_json("/api/runs?sort=name&order=asc")["runs"]]
    assert names == sorted(names)
    page = server.get_json("/api/runs?sort=started_at&order=asc&limit=1&offset=1")
    assert page["total"] == 3 and len(page["runs"]) == 1 and page["offset"] == 1
    assert ids("tag=" + quote("'; DROP TABLE runs; --")) == []
    assert server.get_json("/api/runs")["total"] == 3


def test_api_run_and_keys(server: Server, runs: dict[str, str]) -> None:
    run = server.get_json(f"/api/runs/{runs['alpha']}")
    assert run["name"] == "the-alpha-run" and run["group_name"] == "g1"
    keys = server.get_json(f"/api/runs/{runs['alpha']}/keys")
    assert keys["metrics"] == ["a,b", "accuracy", "loss"]
    assert "cpu/percent" in keys["system"]


def test_metrics_downsampled_keep_the_spike_and_the_nan(
    server: Server, runs: dict[str, str]
) -> None:
    body = server.get_json(f"/api/runs/{runs['alpha']}/metrics?keys=loss&max_points=40")
    (series,) = body["series"]
    assert series["count"] == STEPS and series["downsampled"]
    assert len(series["x"]) <= 40 and series["x"] == sorted(series["x"])
    points = dict(zip(series["x"], series["y"], strict=True))
    assert points[SPIKE_STEP] == 100.0
    assert points[NAN_STEP] == "NaN"
    assert points[0] == 1.0 and points[STEPS - 1] == 1 / STEPS


def test_metrics_full_series_by_time_and_several_keys(server: Server, runs: dict[str, str]) -> None:
    alpha = runs["alpha"]
    body = server.get_json(f"/api/runs/{alpha}/metrics?keys=loss,accuracy&x=ts&max_points=100000")
    loss, accuracy = body["series"]
    assert (loss["key"], accuracy["key"]) == ("loss", "accuracy")
    assert loss["count"] == STEPS and not loss["downsampled"] and len(loss["x"]) == STEPS
    assert loss["x"] == sorted(loss["x"]) and loss["x"][0] > 1e9
    assert accuracy["count"] == STEPS // 10
    every = server.get_json(f"/api/runs/{alpha}/metrics")["series"]
    assert [s["key"] for s in every] == ["a,b", "accuracy", "loss"]
    comma = server.get_json(f"/api/runs/{alpha}/metrics?key=a,b")["series"]
    assert [s["key"] for s in comma] == ["a,b"] and comma[0]["count"] == STEPS
    missing = server.get_json(f"/api/runs/{alpha}/metrics?keys=" + quote("loss' --"))["series"]
    assert missing[0]["count"] == 0


def test_a_zoomed_window_gets_its_own_points(server: Server, runs: dict[str, str]) -> None:
    path = f"/api/runs/{runs['alpha']}/metrics?keys=loss"
    body = server.get_json(f"{path}&max_points=40&x_min={SPIKE_STEP - 10}&x_max={SPIKE_STEP + 10}")
    assert (body["x_min"], body["x_max"]) == (SPIKE_STEP - 10, SPIKE_STEP + 10)
    (window,) = body["series"]
    assert window["count"] == 21 and not window["downsampled"]
    assert window["x"] == list(range(SPIKE_STEP - 10, SPIKE_STEP + 11))
    assert window["y"][10] == 100.0
    (thinned,) = server.get_json(f"{path}&max_points=8&x_min=200&x_max={NAN_STEP}.5")["series"]
    assert thinned["count"] == NAN_STEP - 200 + 1 and thinned["downsampled"]
    assert min(thinned["x"]) >= 200 and max(thinned["x"]) <= NAN_STEP
    assert {100.0, "NaN"} <= set(thinned["y"]), "the spike and the NaN left the window"
    (tail,) = server.get_json(f"{path}&x_min={STEPS - 5}")["series"]
    assert tail["x"] == list(range(STEPS - 5, STEPS))
    assert server.get_json(f"{path}&x_max=-1")["series"][0]["count"] == 0
    (system,) = server.get_json(f"/api/runs/{runs['alpha']}/system?keys=cpu/percent&x_min=1e12")[
        "series"
    ]
    assert system["count"] == 0


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("x_min=abc", "x_min"),
        ("x_max=nan", "x_max"),
        ("x_min=inf", "x_min"),
        ("x_max=1e999", "x_max"),
        ("x_min=" + "1" * 100, "x_min"),
        ("x_min=5&x_max=4", "x_min"),
    ],
)
def test_bad_x_range(server: Server, runs: dict[str, str], query: str, field: str) -> None:
    reply = server.get(f"/api/runs/{runs['alpha']}/metrics?{query}")
    assert reply.status == 400 and reply.json()["field"] == field


def test_system_series(server: Server, runs: dict[str, str]) -> None:
    body = server.get_json(f"/api/runs/{runs['alpha']}/system?keys=cpu/percent&max_points=4")
    (series,) = body["series"]
    assert body["x"] == "ts" and series["count"] >= 2 and len(series["x"]) <= 4
    assert server.get_json(f"/api/runs/{runs['alpha']}/system?rank=0")["series"]


def test_console_lines_in_pages(server: Server, runs: dict[str, str]) -> None:
    first = server.get_json("/api/runs/consolerun/console?limit=20")
    assert [line["text"] for line in first["lines"]] == [f"line {i}\n" for i in range(1, 21)]
    rest = server.get_json(f"/api/runs/consolerun/console?after={first['next_after']}")
    assert [line["seq"] for line in rest["lines"]] == list(range(21, 31))


BAD_REQUESTS = [
    ("/api/runs/..", 400, "invalid_id"),
    ("/api/runs/%2e%2e/metrics", 400, "invalid_id"),
    ("/api/runs/a%20b/keys", 400, "invalid_id"),
    ("/run/" + "x" * 200, 400, "invalid_id"),
    ("/api/runs/nosuchrun", 404, "not_found"),
    ("/api/runs/nosuchrun/metrics", 404, "not_found"),
    ("/run/nosuchrun", 404, "not_found"),
    ("/api/runs?sort=password", 400, "invalid_parameter"),
    ("/api/runs?order=sideways", 400, "invalid_parameter"),
    ("/api/runs?limit=-1", 400, "invalid_parameter"),
    ("/api/runs?limit=1e3", 400, "invalid_parameter"),
    ("/api/runs?offset=99999999999999999999999", 400, "invalid_parameter"),
    ("/api/runs?project=" + "p" * 600, 400, "invalid_parameter"),
    ("/api/runs?q=%00", 400, "invalid_parameter"),
    ("/no/such/endpoint", 404, "not_found"),
]


@pytest.mark.parametrize(("path", "status", "error"), BAD_REQUESTS)
def test_bad_input_gets_a_named_4xx(server: Server, path: str, status: int, error: str) -> None:
    reply = server.get(path)
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"] == error and reply.json()["detail"]


@pytest.mark.parametrize("value", ["abc", "0", "3", "100001", "-5", "", "1.5"])
def test_bad_max_points(server: Server, runs: dict[str, str], value: str) -> None:
    reply = server.get(f"/api/runs/{runs['alpha']}/metrics?max_points={value}")
    if value == "":
        assert reply.status == 200
        return
    assert reply.status == 400 and reply.json()["field"] == "max_points"


def test_bad_axis_and_too_many_keys(server: Server, runs: dict[str, str]) -> None:
    alpha = runs["alpha"]
    assert server.get(f"/api/runs/{alpha}/metrics?x=epoch").json()["field"] == "x"
    keys = ",".join(f"k{i}" for i in range(201))
    assert server.get(f"/api/runs/{alpha}/metrics?keys={keys}").json()["field"] == "keys"


def test_wrong_method_is_a_json_405(server: Server) -> None:
    reply = server.request("POST", "/runs", b"{}", {"Content-Type": "application/json"})
    assert reply.status == 405 and reply.json()["error"] == "method_not_allowed"


def test_index_page_is_served(server: Server) -> None:
    reply = server.get("/")
    assert reply.status == 200 and b"<html" in reply.body
    assert reply.headers["content-type"].startswith("text/html")


def test_openapi_json(server: Server) -> None:
    document = orjson.loads(server.get("/openapi.json").body)
    assert document["openapi"].startswith("3.1")
    assert "/api/runs/{run_id}/metrics" in document["paths"]

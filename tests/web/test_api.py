"""The read endpoints against a real server, with runs written by the real producer."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest

import waddle
from tests.helpers import raw_events, raw_log

from .conftest import Server, eventually, start_server, wait_for_run
from .events import finish_event, metrics_event, run_event

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
    ("/api/runs?limit=0", 400, "invalid_parameter"),
    ("/api/runs?limit=10001", 400, "invalid_parameter"),
    ("/api/runs?offset=ten", 400, "invalid_parameter"),
    ("/api/runs?offset=-1", 400, "invalid_parameter"),
    ("/api/runs?sort=config:", 400, "invalid_parameter"),
    ("/api/runs?sort=context:host", 400, "invalid_parameter"),
    ("/api/runs?sort=summary:a%00b", 400, "invalid_parameter"),
    ("/api/runs?sort=" + quote("name; DROP TABLE runs"), 400, "invalid_parameter"),
    ("/api/runs?sort=summary:" + "k" * 513, 400, "invalid_parameter"),
    ("/api/runs?stale_after=-5", 400, "invalid_parameter"),
    ("/api/runs?stale_after=soon", 400, "invalid_parameter"),
    ("/api/runs?config_key=%00", 400, "invalid_parameter"),
    ("/runs?limit=-1", 400, "invalid_parameter"),
    ("/runs?sort=password", 400, "invalid_parameter"),
    ("/api/facets?q=%00", 400, "invalid_parameter"),
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


SWEEP = 25
SWEEP_STATUSES = ("finished", "failed", "killed")


@pytest.fixture(scope="module")
def sweep(server: Server) -> dict[str, dict[str, Any]]:
    """Project "sweep": 25 runs sent through /ingest, with nested and dotted config keys,
    a summary metric that some lack, and one run silent for an hour (stale); the
    expected row of each, by id."""
    now = time.time()
    expected: dict[str, dict[str, Any]] = {}
    for i in range(SWEEP):
        run_id = f"sweep{i:02d}"
        config = {"lr": [1e-4, 3e-3, 1e-2][i % 3], "model": {"width": 64 * (i % 4 + 1)}, "c.d": i}
        config["layers"] = [64, 32 * (i % 2 + 1)]
        summary = {"acc": round((i * 7 % SWEEP) / SWEEP, 3)} if i % 5 else {}
        status = SWEEP_STATUSES[i % 3]
        tags = ["sweep", f"arm-{'AB'[i % 2]}"]
        started = now - 3600 - i
        events = [
            run_event(run_id, project="sweep", name=f"trial-{i:02d}", config=config, tags=tags),
            metrics_event(1, step=i * 3),
            {"seq": 2, "ts": time.time(), "type": "summary", "summary": summary},
            finish_event(3, status),
        ]
        events[0]["ts"] = started
        if i == SWEEP - 1:  # still running, silent since it started an hour ago
            events = [events[0], {**events[2], "seq": 1, "ts": started}]
            status = "running"
        assert server.ingest(run_id, events).status == 200
        expected[run_id] = {"name": f"trial-{i:02d}", "status": status, "tags": tags}
        expected[run_id].update(config=config, summary=summary)
    eventually(
        lambda: (
            server.get_json("/api/runs?project=sweep&status=running&limit=1")["total"] == 1
            and server.get_json("/api/runs?project=sweep&limit=1")["total"] == SWEEP
            and server.get_json("/api/runs?project=sweep&status=finished&limit=1")["total"] == 8
        ),
        what="the sweep in the tables",
    )
    return expected


def page_through(server: Server, query: str, limit: int) -> list[dict[str, Any]]:
    """Every row of a listing, following next_offset ``limit`` rows at a time."""
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = server.get_json(f"/api/runs?{query}&limit={limit}&offset={offset}")
        assert page["offset"] == offset and page["limit"] == limit and len(page["runs"]) <= limit
        rows += page["runs"]
        offset = page["next_offset"]
    assert len(rows) == page["total"]
    return rows


@pytest.mark.parametrize(
    "sort",
    ["started_at", "name", "status", "last_step", "duration", "tags", "summary:acc", "config:lr"],
)
def test_runs_pages_hold_every_run_once_in_any_sort(
    server: Server, sweep: dict[str, dict[str, Any]], sort: str
) -> None:
    for order in ("asc", "desc"):
        rows = page_through(server, f"project=sweep&sort={sort}&order={order}", 7)
        assert sorted(r["run_id"] for r in rows) == sorted(sweep)


def test_runs_sorted_by_config_and_summary_keys_on_the_server(
    server: Server, sweep: dict[str, dict[str, Any]]
) -> None:
    def ids(query: str) -> list[str]:
        return [r["run_id"] for r in page_through(server, f"project=sweep&{query}", 10)]

    def by(value: Callable[[dict[str, Any]], float | None], descending: bool) -> list[str]:
        """Run ids ordered as the server should: by value, missing ones last, ties by id."""
        have = [i for i in sweep if value(sweep[i]) is not None]
        sign = -1 if descending else 1
        have.sort(key=lambda i: (sign * value(sweep[i]), i))  # type: ignore[operator]
        return have + sorted(i for i in sweep if value(sweep[i]) is None)

    acc = lambda row: row["summary"].get("acc")  # noqa: E731
    dotted = lambda row: row["config"]["c.d"]  # noqa: E731
    assert ids("sort=summary:acc&order=asc") == by(acc, False)
    assert ids("sort=config:c.d&order=desc") == by(dotted, True)
    # A nested key is named by its path: model.width; numbers sort as numbers (64 < 128).
    widths = [
        r["config"]["model"]["width"]
        for r in page_through(server, "project=sweep&sort=config:model.width&order=asc", 10)
    ]
    assert widths == sorted(widths) and widths[0] == 64 and widths[-1] == 256
    assert ids("sort=name&order=asc") == sorted(sweep)
    # A key no run has leaves the order to the tie-breaker, the run id.
    assert ids("sort=config:" + quote("x') OR 1=1 --") + "&order=asc") == sorted(sweep)


def test_runs_filtered_on_the_server(server: Server, sweep: dict[str, dict[str, Any]]) -> None:
    def ids(query: str) -> set[str]:
        return {r["run_id"] for r in page_through(server, f"project=sweep&{query}", 100)}

    def where(test: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {i for i, row in sweep.items() if test(row)}

    # Text: name, run id or a tag, any case.
    assert ids("q=TRIAL-1") == where(lambda r: r["name"].startswith("trial-1"))
    assert ids("q=arm-b") == where(lambda r: "arm-B" in r["tags"])
    assert ids("tag=arm-A") == where(lambda r: "arm-A" in r["tags"])
    # Config values: as numbers with >, <, =; as text otherwise; a key alone: has it.
    assert ids("config_key=lr&config_value=" + quote(">0.001")) == where(
        lambda r: r["config"]["lr"] > 0.001
    )
    assert ids("config_key=model.width&config_value=" + quote("<=128")) == where(
        lambda r: r["config"]["model"]["width"] <= 128
    )
    assert ids("config_key=c.d&config_value=" + quote("=7")) == {"sweep07"}
    assert ids("config_key=c.d&config_value=2") == where(lambda r: "2" in str(r["config"]["c.d"]))
    assert ids("config_key=lr&config_value=" + quote(">much")) == set()
    assert ids("config_key=nothere") == set()
    # A run marked running, silent for longer than stale_after, is stale; without it, running.
    assert ids("status=running") == {"sweep24"}
    assert ids("status=stale&stale_after=60") == {"sweep24"}
    assert ids("status=running&stale_after=60") == set()
    assert ids("status=running&stale_after=86400") == {"sweep24"}
    assert ids("status=failed&q=trial-0") == where(
        lambda r: r["status"] == "failed" and r["name"].startswith("trial-0")
    )


def test_seed_runs_endpoint_pages_brief_rows(
    server: Server, sweep: dict[str, dict[str, Any]]
) -> None:
    page = server.get_json("/runs?project=sweep&limit=10&sort=name&order=asc")
    assert page["total"] == SWEEP and page["next_offset"] == 10
    assert [r["run_id"] for r in page["runs"]] == sorted(sweep)[:10]
    assert "config" not in page["runs"][0] and page["runs"][0]["started_at"] > 0
    assert len(server.get_json("/runs?project=sweep")["runs"]) == SWEEP  # no limit: all
    last = server.get_json("/runs?project=sweep&offset=20")
    assert len(last["runs"]) == 5 and last["next_offset"] is None


def test_facets_name_the_keys_and_tags_of_a_project(
    server: Server, sweep: dict[str, dict[str, Any]]
) -> None:
    facets = server.get_json("/api/facets?project=sweep")
    assert facets["total"] == SWEEP
    assert facets["tags"] == ["arm-A", "arm-B", "sweep"]
    config = {f["key"]: f for f in facets["config"]}
    assert set(config) == {"lr", "model.width", "c.d", "layers"}  # a list is one value
    assert config["layers"] == {"key": "layers", "runs": SWEEP, "values": 2}
    assert config["lr"] == {"key": "lr", "runs": SWEEP, "values": 3}
    assert config["model.width"]["values"] == 4 and config["c.d"]["values"] == SWEEP
    summary = {f["key"]: f for f in facets["summary"]}
    assert summary["acc"]["runs"] == len([r for r in sweep.values() if r["summary"]])
    assert server.get_json("/api/facets?project=sweep&tag=arm-A")["total"] == 13

"""The dashboard's live fold (static/js/fold.js) against the server's (consumers/duckdb/fold.py).

The same events go through both: the JavaScript module runs for real, in node when it is
installed and always in chromium, and every field of every run and stream must match.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.logs import run_fields, stream_of
from waddle.consumers.duckdb import fold
from waddle.eventlog.record import check_event

FOLD_JS = Path(__file__).resolve().parents[2] / "waddle/web/static/js/fold.js"
Feed = list[tuple[str, str, list[dict[str, Any]]]]
STREAM_FIELDS = ("rank", "status", "started_at", "finished_at", "exit_code", "config", "summary")
# Runs every feed item through RunFold; prints {runs, streams} as JSON.
HARNESS = """
export function foldAll(RunFold, feed) {
  const state = new RunFold();
  for (const [stream, runId, events] of feed) state.apply(stream, runId, events);
  return {
    runs: Object.fromEntries(state.runs),
    streams: Object.fromEntries(state.streams),
  };
}
"""


class Events:
    """Events of one stream with growing seq and ts, each checked as the reader would."""

    def __init__(self, run_id: str, rank: int = 0, ts: float = 100.0) -> None:
        self.run_id, self.rank, self.seq, self.ts = run_id, rank, 0, ts
        self.items: list[dict[str, Any]] = []

    def add(self, kind: str, **fields: Any) -> Events:
        event = {"seq": self.seq, "ts": self.ts, "type": kind, **fields}
        assert check_event(event) is None, check_event(event)
        self.items.append(event)
        self.seq += 1
        self.ts += 1.5
        return self

    def run(self, **fields: Any) -> Events:
        return self.add("run", **run_fields(self.run_id, rank=self.rank, **fields))

    def feed(self, start: int = 0, stop: int | None = None) -> tuple[str, str, list[Any]]:
        return stream_of(self.run_id, self.rank), self.run_id, self.items[start:stop]


def defines(events: Events, metric: str, step: str | None, **fields: Any) -> Events:
    spec = {"step_metric": step, "summary": None, "hidden": False, "goal": None, **fields}
    return events.add("define_metric", metric=metric, **spec)


def scenarios() -> Feed:
    """Multi-rank runs with ranks out of order, resumes, every finish status, updates."""
    feed: Feed = []
    # One process: config and summary updates, metric definitions replaced, then failed.
    a = Events("a").run(config={"lr": 0.1, "layers": [1, 2]}, started_at=50.0)
    a.add("config", config={"lr": 0.2, "model": {"depth": 3}})
    defines(a, "train/*", "train/global_step")
    defines(a, "eval/loss", "train/global_step", summary="min", goal="minimize")
    a.add("metrics", step=0, data={"train/loss": 1.0, "train/global_step": 0})
    a.add("summary", summary={"loss": 1.0, "best": None})
    defines(a, "train/*", "epoch", hidden=True)
    a.add("metrics", step=7, data={"train/loss": 0.5})
    a.add("metrics", step=3, data={"train/loss": 0.7})
    a.add("summary", summary={"loss": 0.5})
    a.add("console", stream="stdout", text="hello\n")
    a.add("finish", exit_code=1, status="failed")
    feed.append(a.feed())
    # Three ranks, the workers first: rank 2 leads until rank 1, then rank 0, arrives.
    r0 = Events("b", 0, ts=200.0).run(project="lead", started_at=30.0)
    r1 = Events("b", 1, ts=150.0).run(project="one", started_at=20.0, config={"w": 1})
    r2 = Events("b", 2, ts=120.0).run(project="two", started_at=10.0)
    defines(r2, "loss", "step2")
    r2.add("summary", summary={"from": 2}).add("metrics", step=40, data={"x": 1})
    r1.add("summary", summary={"from": 1}).add("config", config={"w": 2})
    defines(r1, "loss", "step1")
    r1.add("finish", exit_code=3, status="killed")
    r0.add("metrics", step=5, data={"loss": 2.0}).add("summary", summary={"from": 0})
    defines(r0, "acc", None, summary="max", goal="maximize")
    r0.add("finish", exit_code=0, status="finished")
    r2.add("finish", exit_code=9, status="failed")
    feed += [r2.feed(0, 3), r1.feed(), r2.feed(3), r0.feed()]
    # A resumed run: finished, then a resumed run event (running again), then crashed.
    c = Events("c").run(started_at=5.0).add("finish", exit_code=0, status="finished")
    c.run(resumed=True, started_at=500.0).add("summary", summary={"after": True})
    c.add("finish", exit_code=None, status="killed")
    feed.append(c.feed())
    # Streams whose run event the live view never saw (it joined late): rank from the name.
    d0, d1 = Events("d", 0, ts=900.0), Events("d", 1, ts=800.0)
    d1.add("summary", summary={"worker": 1}).add("finish", exit_code=0, status="finished")
    d0.add("config", config={"late": True}).add("metrics", step=2, data={"y": 0})
    feed += [d1.feed(), d0.feed()]
    return feed


def python_fold(feed: Feed) -> dict[str, Any]:
    """What the DuckDB writer's fold makes of the feed (its stream-to-rank rule included)."""
    runs: dict[str, fold.RunRow] = {}
    streams: dict[str, fold.StreamRow] = {}
    for name, run_id, events in feed:
        for event in events:
            if name not in streams:
                by_event = event.get("rank") if event["type"] == "run" else None
                rank = by_event if isinstance(by_event, int) else int(name[len(run_id) + 1 :] or 0)
                streams[name] = fold.StreamRow(name, run_id, rank)
            run = runs.setdefault(run_id, fold.RunRow(run_id))
            if event["type"] == "metrics":
                fold.seen(run, event["ts"], event["step"])
            else:
                fold.apply(run, streams[name], event)
    return {
        "runs": {k: state_of(v) for k, v in runs.items()},
        "streams": {k: {f: getattr(v, f) for f in STREAM_FIELDS} for k, v in streams.items()},
    }


def state_of(run: fold.RunRow) -> dict[str, Any]:
    """The run's state: its fields less the writer's caches (``compare=False``)."""
    return {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.compare}


def node_fold(feed: Feed, tmp_path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node here (the chromium variant runs the same check)")
    shutil.copy(FOLD_JS, tmp_path / "fold.mjs")
    (tmp_path / "harness.mjs").write_text(HARNESS)
    script = (
        "import { RunFold } from './fold.mjs'; import { foldAll } from './harness.mjs';"
        "import { readFileSync } from 'node:fs';"
        "process.stdout.write(JSON.stringify(foldAll(RunFold, JSON.parse(readFileSync(0)))));"
    )
    (tmp_path / "main.mjs").write_text(script)
    done = subprocess.run(
        [node, str(tmp_path / "main.mjs")],
        input=json.dumps(feed).encode(),
        capture_output=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def chromium_fold(feed: Feed, browser: Any) -> dict[str, Any]:
    context = browser.new_context()
    try:
        files = {"fold.js": FOLD_JS.read_bytes(), "harness.js": HARNESS.encode()}
        context.route(
            "http://fold.test/**",
            lambda route: route.fulfill(
                status=200,
                content_type="text/javascript",
                body=files.get(route.request.url.rsplit("/", 1)[1], b""),
            ),
        )
        page = context.new_page()
        page.goto("http://fold.test/")
        return page.evaluate(
            """async (feed) => {
              const { RunFold } = await import('/fold.js');
              const { foldAll } = await import('/harness.js');
              return foldAll(RunFold, feed);
            }""",
            feed,
        )
    finally:
        context.close()


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got["runs"]) == sorted(want["runs"])
    for run_id, run in want["runs"].items():
        assert set(got["runs"][run_id]) == set(run), run_id
        for name, value in run.items():
            assert got["runs"][run_id][name] == value, f"run {run_id}: {name}"
    assert sorted(got["streams"]) == sorted(want["streams"])
    for stream, row in want["streams"].items():
        for name, value in row.items():
            assert got["streams"][stream][name] == value, f"stream {stream}: {name}"


def test_the_scenarios_exercise_the_rules() -> None:
    want = python_fold(scenarios())["runs"]
    assert want["b"]["project"] == "lead" and want["b"]["lead_rank"] == 0
    assert want["b"]["summary"] == {"from": 0} and want["b"]["config"] == {"lr": 0.1}
    assert want["b"]["metric_defs"]["acc"]["goal"] == "maximize"
    assert want["b"]["last_step"] == 40 and want["b"]["started_at"] == 10.0
    assert want["a"]["metric_defs"]["train/*"] == {
        "step_metric": "epoch",
        "summary": None,
        "hidden": True,
        "goal": None,
    }
    assert want["a"]["status"] == "failed" and want["a"]["last_step"] == 7
    assert want["c"]["started_at"] == 5.0 and want["c"]["summary"] == {"after": True}
    assert want["d"]["lead_rank"] == 0 and want["d"]["summary"] == {}


def test_node_folds_as_the_server_does(tmp_path: Path) -> None:
    feed = scenarios()
    assert_same(node_fold(feed, tmp_path), python_fold(feed))


def test_chromium_folds_as_the_server_does(browser: Any) -> None:
    feed = scenarios()
    assert_same(chromium_fold(feed, browser), python_fold(feed))

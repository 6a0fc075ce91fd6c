"""The DuckDB writer: what each event becomes in the tables, read back independently."""

from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

import duckdb
import pytest

from tests.consumers.logs import (
    mixed,
    numbers,
    open_stream,
    read_all,
    read_tables,
    run_fields,
    write_run,
)
from tests.helpers import eventually
from waddle.consumers import quarantine
from waddle.consumers.base import ConsumerThread, run_consumer
from waddle.consumers.duckdb import fold
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.errors import StoreError
from waddle.eventlog.segment import list_segments, log_dir, segment_name
from waddle.store import queries
from waddle.store import schema as store


def build(root: Path, **options: object) -> Path:
    path = root / "waddle.duckdb"
    writer = DuckDBWriter(root, path, **options)  # type: ignore[arg-type]
    run_consumer(writer, root, threading.Event(), once=True)
    return path


def query(path: Path, sql: str, params: list[object] | None = None) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_metrics_numbers_non_finite_and_nested(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 20, payload=mixed)
    path = build(tmp_path)
    rows = query(path, "SELECT key, step, value FROM metrics WHERE step = 0 ORDER BY key")
    assert [(k, s) for k, s, _ in rows] == [
        ("count", 0),
        ("loss", 0),
        ("nested.a", 0),
        ("nested.b.c", 0),
    ]
    loss = dict(query(path, "SELECT step, value FROM metrics WHERE key = 'loss'"))
    assert math.isnan(loss[0]) and loss[5] == math.inf and loss[10] == -math.inf
    assert loss[15] == 0.5 and loss[1] == pytest.approx(1 / 3)
    (nans,) = query(path, "SELECT count(*) FROM metrics WHERE isnan(value)")[0]
    assert nans == 1
    (nulls,) = query(path, "SELECT count(*) FROM metrics WHERE value IS NULL")[0]
    assert nulls == 0
    types = query(path, "SELECT typeof(value) FROM metrics LIMIT 1")
    assert types == [("DOUBLE",)]


def test_values_that_are_not_numbers_have_their_own_table(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 4, payload=mixed)
    path = build(tmp_path)
    rows = query(path, "SELECT key, step, value FROM logged_values WHERE step = 1 ORDER BY key")
    assert [(k, s, json.loads(v)) for k, s, v in rows] == [
        ("flag", 1, False),
        ("list", 1, [1, 2]),
        ("nothing", 1, None),
        ("text", 1, "step 1"),
    ]


def test_the_runs_table(tmp_path: Path) -> None:
    writer = open_stream(tmp_path, "r")
    writer.append("run", run_fields("r", config={"lr": 0.1, "layers": 2}, tags=["a", "b"]))
    writer.append("metrics", {"step": 0, "data": {"loss": 1.0}})
    writer.append("config", {"config": {"lr": 0.2}})
    writer.append("metrics", {"step": 7, "data": {"loss": 0.5}})
    writer.append("summary", {"summary": {"best": math.nan, "loss": 0.5}})
    writer.append("summary", {"summary": {"loss": 0.4}})
    writer.append("finish", {"exit_code": 3, "status": "failed", "dropped": {"ENOSPC": 2}})
    writer.close()
    path = build(tmp_path)
    with duckdb.connect(str(path), read_only=True) as con:
        run = queries.get_run(con, "r")
        (dropped,) = con.execute("SELECT dropped FROM streams").fetchone()
    assert run is not None
    assert run["config"] == {"lr": 0.2, "layers": 2}
    assert math.isnan(run["summary"]["best"]) and run["summary"]["loss"] == 0.4
    assert (run["status"], run["exit_code"], run["last_step"]) == ("failed", 3, 7)
    assert run["tags"] == ["a", "b"] and run["project"] == "proj"
    assert run["finished_at"] >= run["started_at"]
    assert json.loads(dropped) == {"ENOSPC": 2}


def test_a_resumed_stream_runs_again_then_finishes(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 5, started_at=100.0)
    path = build(tmp_path)
    assert query(path, "SELECT status FROM runs") == [("finished",)]
    writer = open_stream(tmp_path, "r", resume=True)
    writer.append("run", run_fields("r", resumed=True, started_at=200.0, config={"lr": 9}))
    writer.close()
    build(tmp_path)
    assert query(path, "SELECT status, finished_at, started_at FROM runs") == [
        ("running", None, 100.0)
    ]
    write_run(tmp_path, "r", 5, first_step=5, resume=True, started_at=300.0)
    build(tmp_path)
    assert query(path, "SELECT status, last_step, started_at, config FROM runs") == [
        ("finished", 9, 100.0, '{"lr":0.1}')
    ]


def test_a_run_follows_its_lowest_rank(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 30, rank=1, project="other", finish="failed")
    path = build(tmp_path)
    assert query(path, "SELECT project, status FROM runs") == [("other", "failed")]
    write_run(tmp_path, "r", 10, rank=0, project="main")
    build(tmp_path)
    assert query(path, "SELECT project, status, last_step FROM runs") == [("main", "finished", 29)]
    assert query(path, "SELECT stream, rank, status FROM streams ORDER BY stream") == [
        ("r", 0, "finished"),
        ("r.1", 1, "failed"),
    ]
    assert query(path, "SELECT count(*) FROM metrics WHERE key = 'loss'") == [(40,)]


def test_system_console_and_artifacts(tmp_path: Path) -> None:
    writer = open_stream(tmp_path, "r", rank=2)
    writer.append("run", run_fields("r", rank=2))
    writer.append("system", {"data": {"cpu/percent": 12.5, "gpu/0/util": 80, "host": "x"}})
    writer.append("console", {"stream": "stderr", "text": "warning: x\n"})
    artifact = {"name": "model", "kind": "model", "path": "/m.pt", "size": 12, "sha256": "ab"}
    writer.append("artifact", artifact)
    writer.close()
    path = build(tmp_path)
    assert query(path, "SELECT run_id, rank, key, value FROM system ORDER BY key") == [
        ("r", 2, "cpu/percent", 12.5),
        ("r", 2, "gpu/0/util", 80.0),
    ]
    assert query(path, "SELECT run_id, rank, seq, source, text FROM console") == [
        ("r", 2, 2, "stderr", "warning: x\n")
    ]
    assert query(path, "SELECT run_id, rank, name, kind, path, size, sha256 FROM artifacts") == [
        ("r", 2, "model", "model", "/m.pt", 12, "ab")
    ]


def test_metrics_equal_what_duckdb_read_json_finds_in_the_segments(tmp_path: Path) -> None:
    for run in ("a", "b"):
        write_run(tmp_path, run, 700, payload=numbers, segment_bytes=8192)
    path = build(tmp_path)
    files = [
        str(log_dir(tmp_path) / s / segment_name(first))
        for s in ("a", "b")
        for first in list_segments(log_dir(tmp_path) / s)
    ]
    with duckdb.connect() as con:
        independent = con.execute(
            """
            SELECT d.run_id, e.key, d.step, d.ts, e.value FROM (
              SELECT step, ts, regexp_extract(filename, '/log/([^/]+)/', 1) AS run_id,
                     unnest(map_entries(data)) AS e0
              FROM read_json(?, filename = true, format = 'newline_delimited',
                             columns = {type: 'VARCHAR', step: 'BIGINT', ts: 'DOUBLE',
                                        data: 'MAP(VARCHAR, DOUBLE)'})
              WHERE type = 'metrics') AS d, LATERAL (SELECT d.e0.key, d.e0.value) AS e
            ORDER BY 1, 2, 3, 4
            """,
            [files],
        ).fetchall()
    ours = query(path, "SELECT run_id, key, step, ts, value FROM metrics ORDER BY 1, 2, 3, 4")
    assert len(ours) == 2 * 700 * 3
    assert ours == independent


def test_a_stream_whose_run_event_is_lost_keeps_its_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_run(tmp_path, "lost", 5, rank=3)
    (segment,) = (log_dir(tmp_path) / "lost.3").glob("*.ndjson")
    lines = segment.read_bytes().splitlines(keepends=True)
    segment.write_bytes(b"{broken\n" + b"".join(lines[1:]))
    with caplog.at_level(logging.WARNING):
        path = build(tmp_path)
    assert "no run event" in caplog.text
    assert query(path, "SELECT run_id, rank FROM streams") == [("lost", 3)]
    assert query(path, "SELECT count(*) FROM metrics WHERE run_id = 'lost'") == [(15,)]


def test_a_step_beyond_bigint_is_quarantined_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = open_stream(tmp_path, "r")
    writer.append("run", run_fields("r"))
    writer.append("metrics", {"step": 2**63, "data": {"x": 1}})
    writer.append("metrics", {"step": 1, "data": {"x": 2}})
    writer.close()
    with caplog.at_level(logging.WARNING):
        path = build(tmp_path)
    assert "step must be an integer from 0 to 2**63-1" in caplog.text
    assert query(path, "SELECT step, value FROM metrics") == [(1, 2.0)]
    ((stream, seq, reason, event),) = query(
        path, "SELECT stream, seq, reason, event FROM quarantine"
    )
    assert (stream, seq) == ("r", 1) and "step" in reason
    assert json.loads(event)["step"] == 2**63


# -- the quarantine: one event the store cannot hold never stops the ones after it -------


def narrowed(tmp_path: Path, table: str, column: str, kind: str) -> Path:
    """A store whose ``column`` is narrower than the log's bounds: the stand-in for any
    value DuckDB refuses that the log's checks let through."""
    path = tmp_path / "waddle.duckdb"
    with store.connect(path) as con:
        con.execute(f"ALTER TABLE {table} ALTER {column} TYPE {kind}")
    return path


def artifact(name: str, size: int) -> dict[str, object]:
    return {"name": name, "kind": "model", "path": f"{name}.pt", "size": size, "sha256": "0" * 64}


@pytest.mark.parametrize("steps", [20, 3000], ids=["one-batch", "many-batches"])
def test_a_value_duckdb_refuses_is_quarantined_and_the_rest_is_stored_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, steps: int
) -> None:
    writer = open_stream(tmp_path, "r")
    writer.append("run", run_fields("r"))
    for step in range(steps):
        writer.append("metrics", {"step": step, "data": {"x": step}})
        if step == steps // 2:
            writer.append("artifact", artifact("big", 100_000))
    writer.append("artifact", artifact("small", 10))
    writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    writer.close()
    path = narrowed(tmp_path, "artifacts", "size", "SMALLINT")
    with caplog.at_level(logging.WARNING):
        build(tmp_path, snapshot_interval=0)
    big_seq = steps // 2 + 2
    assert query(path, "SELECT count(*), count(DISTINCT step) FROM metrics") == [(steps, steps)]
    assert query(path, "SELECT name FROM artifacts") == [("small",)]
    ((stream, seq, reason, event),) = query(
        path, "SELECT stream, seq, reason, event FROM quarantine"
    )
    assert (stream, seq) == ("r", big_seq) and "out of range" in reason
    assert json.loads(event)["name"] == "big"
    assert query(path, "SELECT status FROM runs") == [("finished",)]
    assert query(path, "SELECT seq FROM _waddle.offsets") == [(steps + 3,)]
    set_aside = [
        r for r in caplog.records if r.levelno == logging.ERROR and "set aside" in r.message
    ]
    assert len(set_aside) == 1 and f"seq {big_seq}" in set_aside[0].message
    assert quarantine.published_count(tmp_path, "duckdb") == 1
    before = read_tables(path), query(path, "SELECT stream, seq FROM quarantine")
    build(tmp_path)  # a restart stores nothing twice
    assert (read_tables(path), query(path, "SELECT stream, seq FROM quarantine")) == before


def test_an_event_that_cannot_be_folded_is_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold that raises on one event (a bug, an assumption broken) costs that event."""
    original = fold.apply

    def apply(run: fold.RunRow, stream: fold.StreamRow, event: dict[str, object]) -> None:
        if event["type"] == "config" and "boom" in event["config"]:  # type: ignore[operator]
            raise ValueError("cannot fold this config")
        original(run, stream, event)

    monkeypatch.setattr(fold, "apply", apply)
    writer = open_stream(tmp_path, "r")
    writer.append("run", run_fields("r", config={"lr": 0.1}))
    writer.append("config", {"config": {"boom": 1}})
    writer.append("config", {"config": {"lr": 0.2}})
    writer.append("metrics", {"step": 0, "data": {"x": 1}})
    writer.close()
    path = build(tmp_path, snapshot_interval=0)
    assert query(path, "SELECT stream, seq, reason FROM quarantine") == [
        ("r", 1, "ValueError: cannot fold this config")
    ]
    assert json.loads(query(path, "SELECT config FROM runs")[0][0]) == {"lr": 0.2}
    assert query(path, "SELECT count(*) FROM metrics") == [(1,)]


def test_a_failure_no_event_explains_still_stops_the_writer(tmp_path: Path) -> None:
    """Quarantining is for events: a store that refuses even an empty batch is broken."""
    write_run(tmp_path, "r", 5)
    path = narrowed(tmp_path, "_waddle.offsets", "position", "UTINYINT")
    with pytest.raises(StoreError, match="could not write to"):
        build(tmp_path, snapshot_interval=0)
    assert query(path, "SELECT count(*) FROM quarantine") == [(0,)]


def test_readers_in_the_same_process_use_cursors_while_it_runs(tmp_path: Path) -> None:
    writer = DuckDBWriter(tmp_path, snapshot_interval=0.05)
    thread = ConsumerThread(writer, tmp_path, interval=0.01)
    thread.start()
    try:
        write_run(tmp_path, "live", 50)

        def finished_in_another_thread() -> bool:
            results: list[dict[str, object] | None] = []

            def read() -> None:
                with writer.cursor() as cursor:
                    results.append(queries.get_run(cursor, "live"))

            reader = threading.Thread(target=read)
            reader.start()
            reader.join()
            return results[0] is not None and results[0]["status"] == "finished"

        eventually(finished_in_another_thread, 10, "the finished run read through a cursor")
        with writer.cursor() as cursor:
            assert queries.metric_series(cursor, "live", "loss", "step", 1000)[2] == 50
        snapshot = store.snapshot_path(tmp_path / "waddle.duckdb")

        def snapshot_status() -> list[tuple[str]]:
            with duckdb.connect() as con:
                return con.execute("SELECT status FROM read_parquet(?)", [str(snapshot)]).fetchall()

        eventually(lambda: snapshot_status() == [("finished",)], 10, "a finished snapshot")
    finally:
        thread.stop()


def test_a_failed_commit_raises_a_store_error_and_keeps_nothing_of_it(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 30, payload=mixed)
    whole = tmp_path / "whole.duckdb"
    run_consumer(DuckDBWriter(tmp_path, whole), tmp_path, threading.Event(), once=True)
    path = tmp_path / "broken.duckdb"
    writer = DuckDBWriter(tmp_path, path, snapshot_interval=0)
    writer.start({})
    with writer.cursor() as cursor:
        cursor.execute("DROP TABLE logged_values")
    writer.handle(read_all(tmp_path, "r"))
    with pytest.raises(StoreError, match="could not write to"):
        writer.commit()
    assert writer.taken == {}
    writer.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (0,)
    run_consumer(DuckDBWriter(tmp_path, path), tmp_path, threading.Event(), once=True)
    assert read_tables(path) == read_tables(whole)

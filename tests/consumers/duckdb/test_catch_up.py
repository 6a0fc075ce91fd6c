"""What the DuckDB writer does to keep up (a backlog, a host's live runs), held to what it
must leave behind."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.logs import open_stream, run_fields, write_run
from waddle.consumers.duckdb import writer as writer_module
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.eventlog.reader import LogReader, Offset
from waddle.store import queries


@pytest.fixture
def collecting() -> Iterator[None]:
    """The collector enabled, as a process normally runs; restored afterwards."""
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


@pytest.mark.usefixtures("collecting")
def test_the_collector_is_paused_from_handle_to_commit_or_close(tmp_path: Path) -> None:
    first, second = write_run(tmp_path, "a", 20), write_run(tmp_path, "b", 20)
    reader = LogReader(tmp_path)
    writer = DuckDBWriter(tmp_path, snapshot_interval=0)
    writer.start({})
    try:
        writer.handle([reader.read(first)])
        assert not gc.isenabled()
        writer.commit()
        assert gc.isenabled()
        writer.handle([reader.read(second)])
        assert not gc.isenabled()
    finally:
        writer.close()
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("rounds", "queries_made"),
    [
        pytest.param([[0, 1, 2, 3], [0, 1, 2, 3]], 1, id="every run each round"),
        pytest.param([[0, 1], [2, 3], [0, 1]], 2, id="half the runs each round"),
    ],
)
def test_live_runs_stay_cached_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rounds: list[list[int]], queries_made: int
) -> None:
    """Each run is loaded from the database once, though the cache holds only two: the
    runs a commit touched stay, and so do those touched in the last minute. A central
    host commits after each round, and a round holds only some of its live runs; before,
    each commit reloaded the others (two queries a run; at 1,500 live runs that was 40 %
    of the host's CPU). The runs a round meets for the first time are loaded in one
    query, not one each (a fleet of 2,000 starting cost a host seconds of queries)."""
    monkeypatch.setattr(writer_module, "_CACHED_RUNS", 2)
    loads = commit_rounds(tmp_path, monkeypatch, rounds)
    assert sorted(run_id for run_ids in loads for run_id in run_ids) == ["r0", "r1", "r2", "r3"]
    assert len(loads) == queries_made


def test_past_the_limit_the_least_recently_used_runs_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the limit, runs leave the cache from the least recently used end, down to
    the limit and no further: a run committed two rounds ago is still cached. Before,
    every commit over the limit dropped all runs but the last minute's, and went over
    every run touched in the last minute to find them (a host just caught up with
    10,000 finished runs did so at each commit of its live run)."""
    monkeypatch.setattr(writer_module, "_CACHED_RUNS", 2)
    monkeypatch.setattr(writer_module, "_LIVE_S", -1.0)  # no run is live: the limit decides
    loads = commit_rounds(tmp_path, monkeypatch, [[0], [1], [2], [1], [0]])
    assert loads == [["r0"], ["r1"], ["r2"], ["r0"]]  # r1 was used since r0, so r0 left


def test_an_insert_is_given_only_the_names_its_rows_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After catching up with finished runs, a live run's insert is given its own run id
    and keys (``$names``), not every name the catch-up met: DuckDB binds the whole list
    at each statement, and a host caught up with 10,000 finished runs spent 17 ms of CPU
    on each insert of its one live run, 20 commits a second."""
    finished = [write_run(tmp_path, f"old{i}", 3) for i in range(20)]
    live = write_run(tmp_path, "live", 3)
    given: list[list[str]] = []
    insert = writer_module.insert

    def recording(con: Any, *, table: str, arrays: dict[str, Any], select: str) -> None:
        if table == "metrics":
            given.append(list(arrays["names"]))
        insert(con, table=table, arrays=arrays, select=select)

    monkeypatch.setattr(writer_module, "insert", recording)
    reader = LogReader(tmp_path)
    writer = DuckDBWriter(tmp_path, snapshot_interval=0)
    writer.start({})
    try:
        writer.handle([reader.read(stream, Offset()) for stream in finished])
        writer.commit()
        writer.handle([reader.read(live, Offset())])
        writer.commit()
        stored = writer.cursor().execute(
            "SELECT run_id, key, count(*) FROM metrics GROUP BY ALL ORDER BY ALL"
        )
        rows = stored.fetchall()
    finally:
        writer.close()
    assert len(given) == 2
    assert sorted(given[1]) == ["acc", "live", "loss", "lr"]
    expected = sorted(
        (run, key, 3)
        for run in ["live", *(f"old{i}" for i in range(20))]
        for key in ("acc", "loss", "lr")
    )
    assert rows == expected


def commit_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rounds: list[list[int]]
) -> list[list[str]]:
    """Commit a batch of each round's runs (of four, written to ``tmp_path``), round by
    round; the run ids each query loaded."""
    streams = [write_run(tmp_path, f"r{i}", 200) for i in range(4)]
    reader = LogReader(tmp_path, batch_bytes=4096)
    writer = DuckDBWriter(tmp_path, snapshot_interval=0)
    writer.start({})
    loads: list[list[str]] = []
    get_runs = queries.get_runs
    monkeypatch.setattr(
        queries, "get_runs", lambda con, run_ids: loads.append(run_ids) or get_runs(con, run_ids)
    )
    monkeypatch.setattr(queries, "get_run", None)  # one run at a time: not any more
    offsets = {stream: Offset() for stream in streams}
    try:
        for group in rounds:
            batches = [reader.read(streams[i], offsets[streams[i]]) for i in group]
            writer.handle(batches)
            writer.commit()
            offsets.update((batch.stream, batch.offset) for batch in batches)
    finally:
        writer.close()
    return loads


def test_rows_committed_again_carry_what_changed_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live run's row is committed every round; its JSON text is kept between rounds,
    its stream's row is not written again while only metrics arrive, and what a later
    event changes (config, summary, finish) still reaches the tables."""
    written: list[tuple[int, int, int]] = []  # runs replaced, runs stepped, streams
    upsert_all = writer_module.upsert_all

    def upserting(con: Any, **rows: Any) -> None:
        written.append((len(rows["runs"]), len(rows["steps"]), len(rows["streams"])))
        upsert_all(con, **rows)

    monkeypatch.setattr(writer_module, "upsert_all", upserting)
    writer_of_log = open_stream(tmp_path, "live")
    writer_of_log.append("run", run_fields("live", config={"lr": 0.1}))
    reader = LogReader(tmp_path)
    writer = DuckDBWriter(tmp_path, snapshot_interval=0)
    writer.start({})
    offset = Offset()
    try:
        for event in (
            ("metrics", {"step": 0, "data": {"loss": 1.0}}),
            ("config", {"config": {"lr": 0.2}}),
            ("metrics", {"step": 1, "data": {"loss": 0.5}}),
            ("summary", {"summary": {"best": 0.5}}),
            ("finish", {"exit_code": 0, "status": "finished", "dropped": {}}),
        ):
            writer_of_log.append(*event)
            batch = reader.read("live", offset)
            offset = batch.offset
            writer.handle([batch])
            writer.commit()
        with writer.cursor() as cursor:
            runs = queries.get_run(cursor, "live")
            streams = cursor.execute("SELECT status, config, summary FROM streams").fetchall()
    finally:
        writer.close()
        writer_of_log.close()
    assert runs is not None
    assert (runs["config"], runs["summary"], runs["status"], runs["last_step"]) == (
        {"lr": 0.2},
        {"best": 0.5},
        "finished",
        1,
    )
    assert streams == [("finished", '{"lr":0.2}', '{"best":0.5}')]
    # The round of metrics alone left the rows as they were, but for the run's step.
    assert written == [(1, 0, 1), (1, 0, 1), (0, 1, 0), (1, 0, 1), (1, 0, 1)]

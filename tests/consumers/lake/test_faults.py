"""The lake under faults: a consumer killed with SIGKILL while it exports leaves no run
half visible (a run is visible by its ``runs`` file, and then whole), and the next start
completes every export once; hostile ids never name a path outside the lake."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from tests.consumers.lake.lakes import HERE, TIMEOUT_S, checksums, consume, export, files
from tests.consumers.logs import open_stream, run_fields, write_run
from waddle.consumers.base import run_consumer
from waddle.consumers.lake import export as lake_export
from waddle.consumers.lake.consumer import LakeConsumer, writer_path
from waddle.errors import PermanentError, StoreError

RUNS = 12
BATCH_RUNS = 5  # the killed consumer's batch size: three batches, the last one short
# The tables in which a run of ``write_run`` has rows (the others get no file).
WITH_ROWS = ("config", "summary", "streams", "metrics", "runs")


def per_run(found: dict[str, dict[str, list[int]]], runs: set[str]) -> dict[str, object]:
    """The checksums of ``runs`` only."""
    return {
        table: {key: value for key, value in rows.items() if key.split("/")[0] in runs}
        for table, rows in found.items()
    }


def visible_runs(lake: Path) -> set[str]:
    return {p.parent.name.removeprefix("run_id=") for p in lake.glob("runs/*/*/*.parquet")}


def visible_after(renames: int) -> int:
    """How many runs are visible after ``renames`` renames into the lake, in the order the
    export promises: per batch, every table but ``runs`` run by run, then the ``runs``
    files in run order."""
    visible = 0
    for first in range(0, RUNS, BATCH_RUNS):
        size = min(BATCH_RUNS, RUNS - first)
        if renames < size * len(WITH_ROWS):
            return visible + max(0, renames - size * (len(WITH_ROWS) - 1))
        renames -= size * len(WITH_ROWS)
        visible += size
    return visible


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 20, 23, 26, 60])
def test_sigkill_mid_export_shows_no_half_run_and_the_restart_completes_it(
    tmp_path: Path, kill_at: int
) -> None:
    """The consumer, a real process, SIGKILLs itself just before its ``kill_at``-th rename
    (``killed.py``): in the first batch's other tables, among its ``runs`` files, at the
    first rename of the second batch, before the last rename of all."""
    root, lake = tmp_path / "w", tmp_path / "lake"
    names = [f"run{index:02d}" for index in range(RUNS)]
    for name in names:
        write_run(root, name, 50)
    consume(root)  # the reference tables
    args = ["--dir", str(root), "--once", "--consumer", "lake", "--lake", str(lake)]
    killed = subprocess.run(
        [sys.executable, str(HERE / "killed.py"), str(kill_at), str(BATCH_RUNS), *args],
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    seen = visible_runs(lake)
    assert seen == set(names[: visible_after(kill_at - 1)])
    found = checksums(root / "waddle.duckdb", lake)
    assert per_run(found["lake"], seen) == per_run(found["store"], seen)

    export(root, lake)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert len(files(lake)) == RUNS * len(WITH_ROWS)  # one file each, nothing staged left


def test_a_crash_between_renames_is_completed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "r1", 10)
    renames = []
    replace = os.replace

    def dies_after_three(source: Path, target: Path) -> None:
        if lake in Path(target).parents:
            if len(renames) == 3:
                raise KeyboardInterrupt  # stands for the process dying here
            renames.append(target)
        replace(source, target)

    monkeypatch.setattr(lake_export.os, "replace", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_consumer(LakeConsumer(root, lake), root, threading.Event(), once=True)
    assert not visible_runs(lake) and len(files(lake)) > 3  # three tables and the staging
    monkeypatch.undo()

    export(root, lake)
    consume(root)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert len(files(lake)) == len(WITH_ROWS)


@pytest.mark.parametrize("failing", ["file", "folder"])
def test_a_failed_fsync_is_built_on_by_nothing_and_the_next_start_redoes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A staged file whose fsync fails is not renamed into place; renames whose folder's
    fsync fails get no ``runs`` file and are not recorded as exported."""
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "r1", 3)
    fsync = os.fsync

    def fails(fd: int) -> None:  # for the lake's files or folders only
        in_lake = Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(lake)
        if in_lake and stat.S_ISDIR(os.fstat(fd).st_mode) == (failing == "folder"):
            raise OSError(errno.EIO, "Input/output error")
        fsync(fd)

    monkeypatch.setattr(lake_export.os, "fsync", fails)
    consumer = LakeConsumer(root, lake)
    with pytest.raises(StoreError, match="could not write"):
        run_consumer(consumer, root, threading.Event(), once=True)
    monkeypatch.undo()
    placed = [f for f in files(lake) if not f.startswith(lake_export.STAGING)]
    assert len(placed) == (0 if failing == "file" else len(WITH_ROWS) - 1)
    assert not visible_runs(lake)
    with duckdb.connect(str(root / f"{consumer.name}.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM _lake.exported").fetchall() == [(0,)]

    export(root, lake)
    consume(root)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert len(files(lake)) == len(WITH_ROWS)


def test_a_lost_scratch_database_leaves_each_row_in_the_lake_once(tmp_path: Path) -> None:
    """The scratch database rebuilt from the log names its files as before, so it finds
    its exports current (not redone, not doubled) and exports the rest."""
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "r1", 3)
    write_run(root, "r2", 4, project="other")
    export(root, lake)
    before = {f: (lake / f).stat().st_mtime_ns for f in files(lake)}
    scratch = list(root.glob("lake-*.duckdb*"))
    assert scratch
    for path in scratch:
        path.unlink()
    write_run(root, "r3", 2)

    export(root, lake)
    consume(root)
    found = checksums(root / "waddle.duckdb", lake)
    assert found["lake"] == found["store"]
    assert len(files(lake)) == 3 * len(WITH_ROWS)
    assert {f: (lake / f).stat().st_mtime_ns for f in before} == before


def test_hostile_ids_stay_inside_the_lake(tmp_path: Path) -> None:
    """A run event's run id is not checked by the reader: the lake checks it."""
    root, lake = tmp_path / "w", tmp_path / "lake"
    writer = open_stream(root, "evil")
    try:
        writer.append("run", run_fields("../../escape", project="../../../outside"))
        writer.append("metrics", {"step": 0, "data": {"x": 1.0}})
        writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    finally:
        writer.close()
    write_run(root, "fine", 2, project="../../../outside")
    export(root, lake)
    outside = [p for p in tmp_path.rglob("*.parquet") if lake not in p.parents]
    assert outside == []
    assert all(".." not in Path(f).parts for f in files(lake))
    assert visible_runs(lake) == {"fine"}  # the store took the run id; the lake refuses it


def test_a_writer_id_file_that_holds_no_id_is_refused(tmp_path: Path) -> None:
    """The writer id names files in the lake: a hand-edited one must not name a path."""
    root, lake = tmp_path / "w", tmp_path / "lake"
    write_run(root, "r1", 2)
    consumer = LakeConsumer(root, lake)
    path = writer_path(root, consumer.name)
    path.parent.mkdir(parents=True)
    path.write_text("../../escape\n")
    with pytest.raises(PermanentError, match="holds no writer id"):
        run_consumer(consumer, root, threading.Event(), once=True)
    assert not lake.exists()
    assert list(tmp_path.rglob("*.parquet")) == []

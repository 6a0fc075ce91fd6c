"""What the DuckDB writer does to catch up quickly, held to what it must leave behind."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.consumers.logs import write_run
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.eventlog.reader import LogReader


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

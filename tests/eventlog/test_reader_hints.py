"""Hinted streams (waddle/eventlog/parking.py): a stream whose writer in this process
says when it grew (``Hints``, the host's ``/ingest``) is read when a hint names it, not
every poll; a hint that goes missing is made up for by the rare check; a backlog is read
to its end; a stream no longer covered is polled again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from waddle.eventlog.watch import Hints
from waddle.eventlog.writer import StreamWriter

from .test_reader_parking import CountingReader, parked, tail_of, write

__all__ = ["tail_of"]  # the fixture, used by name


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[tuple[Hints, StreamWriter]]:
    """The stream ``hinted``, its writer held open and covered, as ``/ingest`` does."""
    hints = Hints()
    writer = StreamWriter(tmp_path / "log" / "hinted")
    hints.cover("hinted")
    yield hints, writer
    writer.close()


def grow(writer: StreamWriter, count: int) -> None:
    for step in range(count):
        writer.append("metrics", {"step": step, "data": {"loss": 1.0}})


def started(tmp_path: Path, tail_of: Any, hints: Hints, **options: Any) -> tuple[Any, Any]:
    write(tmp_path, "polled", 2, finish=False)  # a live stream written by another process
    reader = CountingReader(tmp_path, hints=hints.subscribe(), notify=False, **options)
    return reader, tail_of(reader)


def test_a_covered_stream_is_read_when_a_hint_names_it(
    tmp_path: Path, tail_of: Any, ingest: tuple[Hints, StreamWriter]
) -> None:
    hints, writer = ingest
    grow(writer, 3)
    reader, tail = started(tmp_path, tail_of, hints, hint_check=3600.0)
    eventually(lambda: tail.seqs("hinted") == [0, 1, 2], timeout=10, what="the first round")
    eventually(lambda: parked(reader, "hinted", "polled"), timeout=20, what="no reads")
    grow(writer, 2)
    hints.grew(["hinted"])
    eventually(lambda: tail.seqs("hinted") == [0, 1, 2, 3, 4], timeout=10, what="the hint")


def test_a_lost_hint_is_made_up_for_by_the_rare_check(
    tmp_path: Path, tail_of: Any, ingest: tuple[Hints, StreamWriter]
) -> None:
    hints, writer = ingest
    grow(writer, 1)
    _, tail = started(tmp_path, tail_of, hints, hint_check=0.2)
    eventually(lambda: tail.seqs("hinted") == [0], timeout=10, what="the first round")
    grow(writer, 2)  # and no hint
    eventually(lambda: tail.seqs("hinted") == [0, 1, 2], timeout=10, what="the rare check")


def test_a_stream_covered_after_the_first_round_is_read_though_its_hint_is_lost(
    tmp_path: Path, tail_of: Any
) -> None:
    hints = Hints()
    _, tail = started(tmp_path, tail_of, hints, hint_check=0.2)
    eventually(lambda: "polled" in tail.events, timeout=10, what="the first round")
    writer = StreamWriter(tmp_path / "log" / "late")
    hints.cover("late")
    try:
        grow(writer, 2)  # and no hint
        eventually(lambda: tail.seqs("late") == [0, 1], timeout=10, what="the new stream")
        grow(writer, 1)
        eventually(lambda: tail.seqs("late") == [0, 1, 2], timeout=10, what="the rare check")
    finally:
        writer.close()


def test_a_backlog_is_read_to_its_end_after_one_hint(
    tmp_path: Path, tail_of: Any, ingest: tuple[Hints, StreamWriter]
) -> None:
    hints, writer = ingest
    _, tail = started(tmp_path, tail_of, hints, hint_check=3600.0, batch_bytes=256)
    eventually(lambda: "polled" in tail.events, timeout=10, what="the first round")
    grow(writer, 200)  # far more than one batch of 256 bytes
    hints.grew(["hinted"])
    eventually(lambda: tail.seqs("hinted") == list(range(200)), timeout=10, what="the backlog")


def test_a_stream_no_longer_covered_is_polled_again(
    tmp_path: Path, tail_of: Any, ingest: tuple[Hints, StreamWriter]
) -> None:
    hints, writer = ingest
    grow(writer, 1)
    reader, tail = started(tmp_path, tail_of, hints, hint_check=3600.0)
    eventually(lambda: tail.seqs("hinted") == [0], timeout=10, what="the first round")
    eventually(lambda: parked(reader, "hinted", "polled"), timeout=20, what="no reads")
    hints.uncover("hinted")  # its writer closed: another process may grow it now
    grow(writer, 1)
    eventually(lambda: tail.seqs("hinted") == [0, 1], timeout=10, what="the poll")


def test_each_reader_gets_every_hint_once() -> None:
    hints = Hints()
    first, second = hints.subscribe(), hints.subscribe()
    hints.grew(["a", "b"])
    assert first.take() == {"a", "b"}
    hints.grew(["c"])
    assert (first.take(), second.take(), second.take()) == ({"c"}, {"a", "b", "c"}, set())
    version, covered = hints.covered()
    hints.cover("a")
    assert hints.covered()[0] != version and hints.covered()[1] == {"a"} and not covered

"""One suite for every consumer (litestream's habit): the in-memory reference consumer
and the DuckDB writer must both resume from their committed offsets, ignore a replayed
batch, and close cleanly after an error, ending with exactly what an uninterrupted run
stores; a bad line is quarantined exactly once. Hostile input: test_hostile.py."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.consumers.logs import mixed, read_all, read_tables, segments, write_run
from waddle.consumers.base import Consumer, run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.memory import MemoryConsumer, MemoryStore
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.record import encode


class MemoryKind:
    def __init__(self, root: Path, label: str) -> None:
        self.root = root
        self.store = MemoryStore()

    def make(self) -> Consumer:
        return MemoryConsumer(self.store, durable=True, root=self.root)

    def observe(self) -> Any:
        events = {s: [encode(e) for e in evs] for s, evs in self.store.events.items()}
        return events, dict(self.store.offsets)

    def quarantined(self) -> list[tuple[str, int | None]]:
        return sorted((r.stream, r.seq) for r in self.store.quarantine)


class DuckDBKind:
    def __init__(self, root: Path, label: str) -> None:
        self.root = root
        self.path = root.parent / f"{label}.duckdb"

    def make(self) -> Consumer:
        return DuckDBWriter(self.root, self.path, snapshot_interval=0)

    def observe(self) -> Any:
        return read_tables(self.path)

    def quarantined(self) -> list[tuple[str, int | None]]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            return con.execute("SELECT stream, seq FROM quarantine ORDER BY ALL").fetchall()


KINDS = {"memory": MemoryKind, "duckdb": DuckDBKind}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three streams (one of a second rank) with every kind of value and roll-overs."""
    root = tmp_path / "w"
    write_run(root, "alpha", 120, payload=mixed, segment_bytes=4096)
    write_run(root, "alpha", 40, payload=mixed, rank=1, segment_bytes=4096)
    write_run(root, "beta", 80, segment_bytes=2048, finish="failed")
    return root


@pytest.fixture(params=sorted(KINDS))
def kind(request: pytest.FixtureRequest, root: Path) -> Any:
    return lambda label: KINDS[request.param](root, label)


def complete(kind: Any, root: Path, label: str) -> Any:
    store = kind(label)
    run_consumer(store.make(), root, threading.Event(), once=True)
    return store


def small_rounds(root: Path) -> list[list[Batch]]:
    """The whole log as the reader hands it out in small rounds (1 KiB per stream)."""
    reader = LogReader(root, batch_bytes=1024)
    offsets: dict[str, Offset] = {}
    rounds = []
    while batches := reader.poll(offsets):
        offsets.update({b.stream: b.offset for b in batches})
        rounds.append(batches)
    return rounds


def test_resume_from_committed_offsets(kind: Any, root: Path) -> None:
    expected = complete(kind, root, "whole").observe()
    store = kind("pieces")
    rounds = small_rounds(root)
    assert len(rounds) > 6
    committed: dict[str, Offset] = {}
    for start, stop in ((0, 2), (2, 5), (5, len(rounds))):
        consumer = store.make()
        assert consumer.start({}) == committed
        for batches in rounds[start:stop]:
            consumer.handle(batches)
        committed = consumer.commit()
        consumer.close()
    assert store.observe() == expected


def test_resume_mid_stream_then_tail_to_the_end(kind: Any, root: Path) -> None:
    expected = complete(kind, root, "whole").observe()
    store = kind("resumed")
    consumer = store.make()
    consumer.start({})
    for batches in small_rounds(root)[:3]:
        consumer.handle(batches)
    consumer.commit()
    consumer.close()
    run_consumer(store.make(), root, threading.Event(), once=True)
    assert store.observe() == expected


def test_idempotent_on_a_replayed_batch(kind: Any, root: Path) -> None:
    expected = complete(kind, root, "whole").observe()
    store = kind("replayed")
    consumer = store.make()
    consumer.start({})
    rounds = small_rounds(root)
    for batches in rounds:
        consumer.handle(batches)
        consumer.handle(batches)
    consumer.commit()
    consumer.close()
    assert store.observe() == expected
    again = store.make()
    again.start({})
    for stream in ("alpha", "alpha.1", "beta"):
        again.handle(read_all(root, stream))
    again.commit()
    again.close()
    assert store.observe() == expected


def test_overlapping_batches_take_only_what_is_new(kind: Any, root: Path) -> None:
    expected = complete(kind, root, "whole").observe()
    store = kind("overlap")
    consumer = store.make()
    consumer.start({})
    for stream in ("alpha", "alpha.1", "beta"):
        batches = read_all(root, stream)
        half = len(batches) // 2
        consumer.handle(batches[:half])
        consumer.handle(batches)
    consumer.commit()
    consumer.close()
    assert store.observe() == expected


class FailingReader(LogReader):
    """A reader that breaks after some rounds, as a vanished disk would."""

    def __init__(self, root: Path, rounds: int) -> None:
        super().__init__(root, batch_bytes=1024)
        self.left = rounds

    def poll(self, offsets: Any) -> list[Batch]:
        if self.left == 0:
            raise OSError("the disk went away")
        self.left -= 1
        return super().poll(offsets)


def test_clean_close_after_an_error(kind: Any, root: Path) -> None:
    expected = complete(kind, root, "whole").observe()
    store = kind("failed")
    closed = []
    consumer = store.make()
    original_close = consumer.close

    def close() -> None:
        closed.append(True)
        original_close()

    consumer.close = close  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk went away"):
        run_consumer(consumer, root, threading.Event(), reader=FailingReader(root, 7))
    assert closed == [True]
    partial = store.observe()
    assert partial != expected
    run_consumer(store.make(), root, threading.Event(), once=True)
    assert store.observe() == expected


def test_uncommitted_work_is_dropped_by_close(kind: Any, root: Path) -> None:
    store = kind("dropped")
    rounds = small_rounds(root)
    consumer = store.make()
    consumer.start({})
    consumer.handle(rounds[0])
    committed = consumer.commit()
    consumer.close()
    before = store.observe()
    consumer = store.make()
    assert consumer.start({}) == committed
    consumer.handle(rounds[1])
    consumer.handle(rounds[2])
    consumer.close()
    assert store.observe() == before
    again = store.make()
    assert again.start({}) == committed
    again.close()


def test_a_second_start_after_close_resumes(kind: Any, root: Path) -> None:
    expected = complete(kind, root, "whole").observe()
    store = kind("twice")
    consumer = store.make()
    for rounds in (small_rounds(root)[:4], small_rounds(root)):
        consumer.start({})
        for batches in rounds:
            consumer.handle(batches)
        consumer.commit()
        consumer.close()
    assert store.observe() == expected


def test_a_bad_line_is_quarantined_once_whatever_is_replayed(kind: Any, root: Path) -> None:
    first = segments(root, "beta")[0]
    lines = first.read_bytes().split(b"\n")
    lines[10] = b'{"seq": 10, "ts": 1.0, "type": "metrics", "step": -1, "data": {}}'
    first.write_bytes(b"\n".join(lines))
    store = kind("bad")
    for commit in (False, True):  # what is not committed is not quarantined either
        consumer = store.make()
        consumer.start({})
        for batches in small_rounds(root):
            consumer.handle(batches)
            consumer.handle(batches)
        if commit:
            consumer.commit()
        consumer.close()
        assert store.quarantined() == ([("beta", 10)] if commit else [])
    again = store.make()
    again.start({})
    for stream in ("alpha", "alpha.1", "beta"):
        again.handle(read_all(root, stream))
    again.commit()
    again.close()
    assert store.quarantined() == [("beta", 10)]

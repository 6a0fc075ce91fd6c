"""One suite for every consumer (litestream's habit).

The durable ones (the in-memory reference consumer, the DuckDB writer, the lake
consumer, and the relay against a real ``waddle serve`` central host) must resume from
their committed offsets, ignore a replayed batch, and close cleanly after an error,
ending with exactly what an uninterrupted run stores; a bad line is quarantined exactly
once by those that keep a quarantine. The live broadcaster (not durable: it starts at
the end of the log) must take exactly what follows its start, once, however batches are
replayed, and close cleanly after an error. Hostile input: test_hostile.py."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.consumers.logs import mixed, normal, read_all, read_tables, segments, write_run
from tests.consumers.relay.support import log_events
from tests.web.conftest import start_server
from waddle.consumers.base import Consumer, Offsets, run_consumer
from waddle.consumers.broadcast import Broadcaster, Chunk, Hub, Subscriber
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.lake.consumer import LakeConsumer
from waddle.consumers.memory import MemoryConsumer, MemoryStore
from waddle.consumers.registry import StateStore
from waddle.consumers.relay.client import Backoff
from waddle.consumers.relay.consumer import RelayConsumer
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.record import encode
from waddle.store.lake import TABLES as LAKE_TABLES
from waddle.store.lake import has_files, scan


class MemoryKind:
    keeps_quarantine = True

    def __init__(self, root: Path, label: str, cleanup: ExitStack) -> None:
        self.root = root
        self.store = MemoryStore()

    def make(self) -> Consumer:
        return MemoryConsumer(self.store, durable=True, root=self.root)

    def observe(self) -> Any:
        events = {s: [encode(e) for e in evs] for s, evs in self.store.events.items()}
        return events, dict(self.store.offsets)

    def committed(self) -> Any:
        """What work that was handled but not committed must leave unchanged."""
        return self.observe()

    def quarantined(self) -> list[tuple[str, int | None]]:
        return sorted((r.stream, r.seq) for r in self.store.quarantine)


class DuckDBKind:
    keeps_quarantine = True

    def __init__(self, root: Path, label: str, cleanup: ExitStack) -> None:
        self.root = root
        self.path = root.parent / f"{label}.duckdb"

    def make(self) -> Consumer:
        return DuckDBWriter(self.root, self.path, snapshot_interval=0)

    def observe(self) -> Any:
        return read_tables(self.path)

    def committed(self) -> Any:
        return self.observe()

    def quarantined(self) -> list[tuple[str, int | None]]:
        with duckdb.connect(str(self.path), read_only=True) as con:
            return con.execute("SELECT stream, seq FROM quarantine ORDER BY ALL").fetchall()


class PublishingRelay(RelayConsumer):
    """The relay as the run loop drives it: its offsets live in the registry, not in a
    store of its own, so ``start`` resumes from the published ones and ``commit``
    publishes (as ``run_consumer`` does after every commit)."""

    def start(self, offsets: Any) -> Offsets:
        return super().start(StateStore(self.root).load(self.name))

    def commit(self) -> Offsets:
        offsets = super().commit()
        StateStore(self.root).publish(self.name, offsets)
        return offsets


class RelayKind:
    """A relay to a central host of its own (a real ``waddle serve`` on loopback)."""

    keeps_quarantine = False  # it forwards; the host's own consumers quarantine

    def __init__(self, root: Path, label: str, cleanup: ExitStack) -> None:
        self.root = root
        self.host = start_server(root.parent / f"host-{label}")
        cleanup.callback(self.host.stop)

    def make(self) -> Consumer:
        fast = Backoff(base=0.02, cap=0.2)
        return PublishingRelay(self.root, self.host.url, linger=0, backoff=fast)

    def observe(self) -> Any:
        """The host's log, event by event, and the offsets the relay published."""
        events = {s: [encode(e) for e in evs] for s, evs in log_events(self.host.root).items()}
        return events, self.committed()

    def committed(self) -> Any:
        """Only the published offsets: the host holds what was posted before a close (and
        skips it when it comes again, which the replay tests check)."""
        return StateStore(self.root).load(RelayConsumer(self.root, self.host.url).name)


class LakeKind:
    """The lake consumer: what it leaves in its lake (rows of every table, files per
    table), which changes only at a commit."""

    keeps_quarantine = False  # its scratch store quarantines; the lake holds runs only

    def __init__(self, root: Path, label: str, cleanup: ExitStack) -> None:
        self.root = root
        self.lake = root.parent / f"{label}-lake"

    def make(self) -> Consumer:
        return LakeConsumer(self.root, self.lake)

    def observe(self) -> Any:
        found: dict[str, Any] = {}
        with duckdb.connect() as con:
            for table in LAKE_TABLES:
                if has_files(self.lake, table):
                    rows = con.execute(f"SELECT * FROM {scan(self.lake, table)} ORDER BY ALL")
                    found[table] = [normal(tuple(row)) for row in rows.fetchall()]
                    found[f"{table} files"] = len(list((self.lake / table).rglob("*.parquet")))
        return found

    def committed(self) -> Any:
        return self.observe()


KINDS = {"memory": MemoryKind, "duckdb": DuckDBKind, "relay": RelayKind, "lake": LakeKind}


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
    """``kind(label)``: a fresh destination of the consumer under test, named ``label``."""
    with ExitStack() as cleanup:
        yield lambda label: KINDS[request.param](root, label, cleanup)


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
    before = store.committed()
    consumer = store.make()
    assert consumer.start({}) == committed
    consumer.handle(rounds[1])
    consumer.handle(rounds[2])
    consumer.close()
    assert store.committed() == before
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
    store = kind("bad")
    if not store.keeps_quarantine:
        pytest.skip(f"{type(store).__name__} keeps no quarantine")
    first = segments(root, "beta")[0]
    lines = first.read_bytes().split(b"\n")
    lines[10] = b'{"seq": 10, "ts": 1.0, "type": "metrics", "step": -1, "data": {}}'
    first.write_bytes(b"\n".join(lines))
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


class RecordingHub(Hub):
    """A hub with one subscriber that records what the broadcaster publishes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribers.add(Subscriber())
        self.sent: list[tuple[str, int]] = []

    def publish(self, items: list[Chunk]) -> None:
        self.sent += [(chunk.stream, event["seq"]) for chunk in items for event in chunk.events]


def append_more(root: Path) -> list[tuple[str, int]]:
    """Log more to two streams after a live consumer started; (stream, seq) of what was
    added, in each stream's order."""
    before = {s: len(evs) for s, evs in log_events(root).items()}
    write_run(root, "alpha", 30, payload=mixed, resume=True, first_step=500, segment_bytes=4096)
    write_run(root, "beta", 10, resume=True, first_step=500, segment_bytes=2048)
    after = log_events(root)
    return [(s, e["seq"]) for s in sorted(after) for e in after[s][before.get(s, 0) :]]


def by_stream(sent: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Order across streams is not promised, order within one is: sort stably by stream."""
    return sorted(sent, key=lambda item: item[0])


def follow(broadcaster: Broadcaster, root: Path, *, replay: bool = False) -> list[tuple[str, int]]:
    """Start ``broadcaster``, log more, and hand it the rounds after its start; with
    ``replay`` each twice, then all again, then the grown streams from their start.
    Returns (stream, seq) of what was added."""
    offsets = dict(broadcaster.start({}))
    added = append_more(root)
    reader = LogReader(root, batch_bytes=1024)
    seen = []
    while batches := reader.poll(offsets):
        seen.append(batches)
        for _ in range(2 if replay else 1):
            broadcaster.handle(batches)
        offsets.update(broadcaster.commit())
    if replay:  # the streams it took from, again from their start
        for batches in [*seen, read_all(root, "alpha"), read_all(root, "beta")]:
            broadcaster.handle(batches)
    broadcaster.close()
    assert len(added) == 30 + 10 + 2 * 3  # a run event, a summary and a finish each
    return added


def test_a_live_consumer_takes_exactly_what_follows_its_start(root: Path) -> None:
    hub = RecordingHub()
    added = follow(Broadcaster(root, hub), root)
    assert by_stream(hub.sent) == added


def test_a_live_consumer_ignores_a_replayed_batch(root: Path) -> None:
    hub = RecordingHub()
    added = follow(Broadcaster(root, hub), root, replay=True)
    assert by_stream(hub.sent) == added


def test_a_live_consumer_closes_cleanly_after_an_error(root: Path) -> None:
    hub = RecordingHub()
    closed = []
    broadcaster = Broadcaster(root, hub)
    original_close = broadcaster.close

    def close() -> None:
        closed.append(True)
        original_close()

    broadcaster.close = close  # type: ignore[method-assign]
    with pytest.raises(OSError, match="disk went away"):
        run_consumer(broadcaster, root, threading.Event(), reader=FailingReader(root, 2))
    assert closed == [True] and hub.sent == []
    added = follow(Broadcaster(root, hub), root)
    assert by_stream(hub.sent) == added

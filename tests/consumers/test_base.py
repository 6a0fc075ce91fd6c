"""The run loop, the offsets a consumer takes, and the library form (ConsumerThread)."""

from __future__ import annotations

import errno
import logging
import threading
import time
from pathlib import Path

import pytest

from tests.consumers.logs import read_all, write_run
from tests.eventlog.test_reader_idle import QuietReader
from tests.helpers import eventually
from waddle.consumers import base
from waddle.consumers.base import Consumer, ConsumerThread, run_consumer
from waddle.consumers.memory import MemoryConsumer, MemoryStore
from waddle.consumers.registry import StateStore
from waddle.consumers.retry import Retry, is_transient
from waddle.errors import (
    ConsumerLockedError,
    PermanentError,
    StoreError,
    StoreLockedError,
    TransientError,
)
from waddle.eventlog import reader as reader_module
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.writer import StreamWriter


def seqs(store: MemoryStore, stream: str) -> list[int]:
    return [event["seq"] for event in store.events.get(stream, [])]


def test_fresh_skips_what_was_taken_and_never_moves_back(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 100)
    batches = read_all(tmp_path, "r")
    consumer = Consumer()
    consumer.start({})
    first = consumer.fresh(batches[0])
    assert [e["seq"] for e in first] == list(range(len(first)))
    assert consumer.fresh(batches[0]) == []
    assert consumer.taken["r"] == batches[0].offset
    consumer.fresh(batches[1])
    consumer.fresh(batches[0])
    assert consumer.taken["r"] == batches[1].offset
    overlap = Batch("r", batches[1].events + batches[2].events, batches[2].offset)
    assert consumer.fresh(overlap) == batches[2].events


def test_once_stops_when_caught_up_and_publishes(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 500, segment_bytes=2048)
    write_run(tmp_path, "s", 10)
    store = MemoryStore()
    committed = run_consumer(
        MemoryConsumer(store, durable=True), tmp_path, threading.Event(), once=True
    )
    assert seqs(store, "r") == list(range(503)) and seqs(store, "s") == list(range(13))
    assert committed == store.offsets
    assert StateStore(tmp_path).load("memory") == committed


def test_a_non_durable_consumer_is_not_registered(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 5)
    run_consumer(MemoryConsumer(), tmp_path, threading.Event(), once=True)
    assert StateStore(tmp_path).registered() == []


def test_commits_are_spaced_while_catching_up(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 3000, segment_bytes=8192)
    store = MemoryStore()
    reader = LogReader(tmp_path, batch_bytes=2048)
    run_consumer(MemoryConsumer(store), tmp_path, threading.Event(), once=True, reader=reader)
    assert seqs(store, "r") == list(range(3003))
    rounds = 3003 * 70 // 2048
    assert store.commits < rounds / 4


def test_stop_ends_a_tail_and_commits(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 20)
    store = MemoryStore()
    stop = threading.Event()
    worker = threading.Thread(
        target=run_consumer,
        args=(MemoryConsumer(store, durable=True), tmp_path, stop),
        kwargs={"interval": 0.01},
    )
    worker.start()
    eventually(lambda: len(seqs(store, "r")) == 23)
    stop.set()
    worker.join(5)
    assert not worker.is_alive()
    assert StateStore(tmp_path).load("memory")["r"].seq == 22


def test_a_second_instance_of_a_durable_consumer_is_refused(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 5)
    first = ConsumerThread(MemoryConsumer(durable=True), tmp_path, interval=0.01)
    first.start()
    try:
        with pytest.raises(ConsumerLockedError, match="already running"):
            run_consumer(MemoryConsumer(durable=True), tmp_path, threading.Event(), once=True)
        assert StateStore(tmp_path).is_running("memory")
    finally:
        first.stop()
    assert not StateStore(tmp_path).is_running("memory")


def test_consumer_thread_follows_new_streams_and_rolled_segments(tmp_path: Path) -> None:
    store = MemoryStore()
    thread = ConsumerThread(MemoryConsumer(store), tmp_path, interval=0.01)
    thread.start()
    try:
        write_run(tmp_path, "first", 5)
        eventually(lambda: len(seqs(store, "first")) == 8)
        write_run(tmp_path, "second", 400, segment_bytes=1024)
        eventually(lambda: len(seqs(store, "second")) == 403)
        assert seqs(store, "second") == list(range(403))
        assert thread.alive
    finally:
        thread.stop()
    assert not thread.alive


def test_consumer_thread_stop_wakes_a_tail_waiting_with_nothing_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "IDLE_WAIT_S", 3600.0)  # only a wake ends it
    write_run(tmp_path, "done", 3)
    store = MemoryStore()
    reader = QuietReader(tmp_path, notify=True)
    thread = ConsumerThread(MemoryConsumer(store), tmp_path, interval=0.01, reader=reader)
    thread.start()
    eventually(reader.quiet.is_set, timeout=20, what="a wait with nothing live")
    thread.stop(timeout=10)
    assert not thread.alive
    assert len(seqs(store, "done")) == 6


class Exploding(MemoryConsumer):
    def handle(self, batches: list[Batch]) -> None:
        raise RuntimeError("boom")


def test_consumer_thread_reports_the_error_that_ended_it(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 5)
    thread = ConsumerThread(Exploding(), tmp_path, interval=0.01)
    thread.start()
    eventually(lambda: not thread.alive)
    with pytest.raises(RuntimeError, match="boom"):
        thread.stop()


class FailsToStart(MemoryConsumer):
    def start(self, offsets: object) -> dict[str, Offset]:
        raise RuntimeError("cannot open")


def test_consumer_thread_start_raises_what_start_raised(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot open"):
        ConsumerThread(FailsToStart(), tmp_path).start()


def test_published_offsets_are_throttled_but_final(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[dict[str, Offset]] = []
    registry = StateStore(tmp_path)
    original = registry.publish
    monkeypatch.setattr(
        StateStore, "publish", lambda self, name, offsets: published.append(offsets)
    )
    write_run(tmp_path, "r", 2000, segment_bytes=4096)
    reader = LogReader(tmp_path, batch_bytes=1024)
    store = MemoryStore()
    run_consumer(
        MemoryConsumer(store, durable=True), tmp_path, threading.Event(), once=True, reader=reader
    )
    assert published[0] == {} and published[-1] == store.offsets
    assert len(published) < 10
    assert original is not None


def test_a_live_tail_publishes_at_most_once_a_second_and_all_in_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail that keeps up with a live stream is idle at every poll: publishing there
    each time rewrote the registry tens of times a second (every stream's offset, before
    the journal). It publishes at most once a second (here never: the second never
    comes), and what is left at the end."""
    published: list[dict[str, Offset]] = []
    monkeypatch.setattr(
        StateStore, "publish", lambda self, name, offsets: published.append(dict(offsets))
    )
    monkeypatch.setattr(base, "PUBLISH_INTERVAL_S", 1e9)
    stop = threading.Event()
    store = MemoryStore()
    consumer = MemoryConsumer(store, durable=True)
    thread = threading.Thread(
        target=run_consumer, args=(consumer, tmp_path, stop), kwargs={"interval": 0.01}
    )
    thread.start()
    writer = StreamWriter(tmp_path / "log" / "live")
    for step in range(60):
        writer.append("metrics", {"step": step, "data": {"loss": 0.5}})
        eventually(lambda n=step + 1: len(seqs(store, "live")) == n, timeout=10, what="taken")
        time.sleep(0.02)  # idle moments between events (polls every 0.01 s)
    writer.close()
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    first, last = published  # the start's (it registers the consumer) and the end's
    assert first == {} and last["live"].seq == 59


def test_until_idle_also_obeys_the_outer_stop() -> None:
    outer = threading.Event()
    idle = base._Rhythm(outer, lambda: None, once=True)
    assert not idle.is_set()
    outer.set()
    assert idle.is_set()
    fresh = base._Rhythm(threading.Event(), lambda: None, once=True)
    assert fresh.wait(5) and fresh.is_set()


class FullDisk(MemoryConsumer):
    """A durable consumer whose commits fail with ENOSPC until ``freed`` is set."""

    def __init__(self, store: MemoryStore, freed: threading.Event) -> None:
        super().__init__(store, durable=True)
        self.freed = freed

    def commit(self) -> dict[str, Offset]:
        if not self.freed.is_set():
            raise OSError(errno.ENOSPC, "No space left on device", "/disk/store")
        return super().commit()


FAST = {"first": 0.01, "most": 0.05}


def test_a_transient_failure_is_logged_retried_and_caught_up_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_run(tmp_path, "r", 100)
    store, freed = MemoryStore(), threading.Event()
    thread = ConsumerThread(FullDisk(store, freed), tmp_path, interval=0.01, retry=Retry(**FAST))
    with caplog.at_level(logging.WARNING, logger="waddle.consumers"):
        thread.start()
        try:
            eventually(lambda: thread.failure is not None)
            assert "No space left on device: '/disk/store'" in caplog.text
            assert "resumes from its last commit" in caplog.text
            eventually(lambda: "failed again" in caplog.text)
            assert thread.alive and seqs(store, "r") == []
            freed.set()
            eventually(lambda: thread.failure is None and len(seqs(store, "r")) == 103)
            assert "works again" in caplog.text
        finally:
            thread.stop()
    assert seqs(store, "r") == list(range(103))
    assert StateStore(tmp_path).load("memory") == store.offsets


def test_stopped_while_failing_it_ends_quietly_with_what_it_committed(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 10)
    thread = ConsumerThread(FullDisk(MemoryStore(), threading.Event()), tmp_path, interval=0.01)
    thread.start()
    eventually(lambda: thread.failure is not None)
    thread.stop(timeout=10)
    assert not thread.alive
    assert StateStore(tmp_path).load("memory") == {}


class Refused(MemoryConsumer):
    def commit(self) -> dict[str, Offset]:
        raise PermanentError("the token is wrong")


def test_a_permanent_failure_still_ends_the_loop(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 5)
    with pytest.raises(PermanentError, match="token"):
        run_consumer(Refused(), tmp_path, threading.Event(), once=True, retry=Retry(**FAST))


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientError("host down"), True),
        (StoreError("could not write"), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (StoreLockedError("held by another process"), False),
        (PermanentError("wrong token"), False),
        (ConsumerLockedError("already running"), False),
        (OSError(errno.EACCES, "Permission denied"), False),
        (RuntimeError("a bug"), False),
    ],
)
def test_what_is_worth_a_retry(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_process_that_asks_freezes_the_heap_once_a_consumer_caught_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``waddle serve`` and ``waddle-consume`` ask: the heap a catch-up leaves is frozen
    once, after the backlog was taken, not at each idle moment of the live tail after."""
    frozen: list[int] = []
    store = MemoryStore()
    monkeypatch.setattr(base.gc, "freeze", lambda: frozen.append(len(seqs(store, "live"))))
    monkeypatch.setattr(base, "_freeze_when_caught_up", False)
    base.freeze_when_caught_up()
    writer = StreamWriter(tmp_path / "log" / "live")
    for step in range(5):
        writer.append("metrics", {"step": step, "data": {"loss": 0.5}})
    stop = threading.Event()
    thread = threading.Thread(
        target=run_consumer,
        args=(MemoryConsumer(store), tmp_path, stop),
        kwargs={"interval": 0.01},
    )
    thread.start()
    for step in range(5, 10):  # a live tail after the catch-up: idle at every poll
        eventually(lambda n=step: len(seqs(store, "live")) == n, timeout=10, what="taken")
        writer.append("metrics", {"step": step, "data": {"loss": 0.5}})
    eventually(lambda: len(seqs(store, "live")) == 10, timeout=10, what="the last taken")
    writer.close()
    stop.set()
    thread.join(30)
    assert frozen == [5]


def test_the_library_leaves_the_collector_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Freezing is a choice for a whole process: a consumer run as a library does not."""
    frozen: list[bool] = []
    monkeypatch.setattr(base.gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(base, "_freeze_when_caught_up", False)
    writer = StreamWriter(tmp_path / "log" / "r")
    writer.append("metrics", {"step": 0, "data": {"x": 1}})
    writer.close()
    run_consumer(MemoryConsumer(MemoryStore()), tmp_path, threading.Event(), once=True)
    assert frozen == []

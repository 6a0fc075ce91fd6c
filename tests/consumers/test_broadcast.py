"""The live broadcaster: chunks, the subscriber's bounded queue and its coalescing into a
log replay, finding the end and a seq in a stream, and the consumer on a real log."""

from __future__ import annotations

import asyncio
import builtins
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.consumers.live import broadcast_while
from tests.consumers.logs import mixed, write_run
from tests.helpers import eventually
from waddle.consumers import broadcast
from waddle.consumers.base import ConsumerThread
from waddle.consumers.broadcast import (
    MAX_CHUNK_BYTES,
    MAX_CHUNK_EVENTS,
    Broadcaster,
    Chunk,
    Hub,
    StreamInfo,
    Subscriber,
    chunks,
    end_offset,
    locate,
    read_after,
)
from waddle.eventlog.reader import LogReader, Offset
from waddle.eventlog.record import decode, encode
from waddle.eventlog.segment import list_segments, log_dir, segment_name
from waddle.limits import MAX_DEPTH

INFO = StreamInfo("r1", "p")
START = Offset()


def events(first: int, count: int, **data: object) -> list[dict[str, object]]:
    return [
        {"seq": s, "ts": 1.0, "type": "metrics", "step": s, "data": data or {"x": s}}
        for s in range(first, first + count)
    ]


def chunk(first: int, count: int, stream: str = "r1", info: StreamInfo = INFO) -> Chunk:
    return chunks(stream, info, events(first, count))[0]


def test_chunks_cut_by_count_and_size_and_spell_non_finite() -> None:
    many = chunks("r1", INFO, events(0, 2 * MAX_CHUNK_EVENTS + 5))
    assert [len(c.events) for c in many] == [MAX_CHUNK_EVENTS, MAX_CHUNK_EVENTS, 5]
    big = chunks("r1", INFO, events(0, 40, blob="x" * 50_000))
    assert len(big) > 1 and all(len(c.text) <= MAX_CHUNK_BYTES for c in big)
    assert [e["seq"] for c in big for e in c.events] == list(range(40))
    (one,) = chunks("r1", INFO, events(0, 1, loss=math.nan, up=math.inf))
    message = orjson.loads(one.text)
    assert message == {
        "type": "events",
        "stream": "r1",
        "run_id": "r1",
        "events": [
            {
                "seq": 0,
                "ts": 1.0,
                "type": "metrics",
                "step": 0,
                "data": {"loss": "NaN", "up": "Infinity"},
            }
        ],
    }


def test_an_event_as_deep_as_the_log_allows_is_broadcast() -> None:
    """The message wraps its events two levels deeper: checking the message against the
    log's depth limit refused the deepest events the log holds (EncodeError in the tail)."""
    deep: object = 1
    for _ in range(MAX_DEPTH - 2):  # with the event and "config", MAX_DEPTH levels
        deep = {"k": deep}
    line = encode({"seq": 0, "ts": 1.0, "type": "config", "config": deep})
    read, _, bad = decode(line, 0)
    assert bad == [] and len(read) == 1  # what a reader of the log hands the broadcaster
    (one,) = chunks("r1", INFO, read)
    assert orjson.loads(one.text)["events"] == read


def test_a_subscriber_takes_only_what_it_follows() -> None:
    subscriber = Subscriber()
    subscriber.offer(chunk(0, 3))
    assert subscriber.take() is None
    subscriber.subscription.projects.add("p")
    subscriber.offer(chunk(0, 3))
    subscriber.offer(chunk(0, 3, stream="r2", info=StreamInfo("r2", "other")))
    subscriber.subscription.runs.add("r3")
    subscriber.offer(chunk(0, 2, stream="r3.1", info=StreamInfo("r3", None)))
    taken = [subscriber.take(), subscriber.take(), subscriber.take()]
    assert [(c.stream, len(c.events)) for c in taken if c] == [("r1", 3), ("r3.1", 2)]


def test_delivered_events_are_not_sent_twice() -> None:
    subscriber = Subscriber()
    subscriber.subscription.runs.add("r1")
    subscriber.sent("r1", 4)
    subscriber.offer(chunk(0, 5))
    subscriber.offer(chunk(3, 5))
    taken = subscriber.take()
    assert taken is not None and [e["seq"] for e in taken.events] == [5, 6, 7]
    assert orjson.loads(taken.text)["events"] == taken.events
    assert subscriber.take() is None


def test_overflow_coalesces_the_queue_into_a_replay_pointer() -> None:
    subscriber = Subscriber(limit=10)
    subscriber.subscription.projects.add("p")
    subscriber.sent("r1", 2)
    subscriber.offer(chunk(3, 6))
    subscriber.offer(chunk(0, 4, stream="r2", info=StreamInfo("r2", "p")))
    assert subscriber.replay == {} and subscriber.pending == 10
    subscriber.offer(chunk(9, 1))
    assert subscriber.queue == type(subscriber.queue)() and subscriber.pending == 0
    assert subscriber.replay == {"r1": 2, "r2": -1}
    assert subscriber.coalesced == 1
    subscriber.offer(chunk(10, 1))  # queued again; skipped while r1 replays
    assert subscriber.take() is None
    subscriber.sent("r1", 6)
    assert subscriber.replay["r1"] == 6


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    write_run(root, "alpha", 300, payload=mixed, segment_bytes=4096, project="pa")
    return root


def drain(reader: LogReader, stream: str, after: int) -> list[int]:
    offset, seqs = locate(reader, stream, after), []
    for _ in range(1000):
        batch = read_after(reader, stream, offset)
        if not batch.events:
            return seqs
        seqs += [e["seq"] for e in batch.events]
        offset = batch.offset
    raise AssertionError("no end")


def test_locate_and_read_after_find_any_seq(root: Path) -> None:
    reader = LogReader(root, batch_bytes=512)
    assert len(list_segments(log_dir(root) / "alpha")) > 5
    everything = drain(reader, "alpha", -1)
    last = everything[-1]
    assert everything == list(range(last + 1)) and last > 300
    for after in (0, 57, 150, 299, last - 1, last):
        assert drain(reader, "alpha", after) == list(range(after + 1, last + 1))
    assert drain(reader, "nosuchstream", 3) == []


def test_end_offset_stops_before_a_torn_tail(root: Path) -> None:
    stream_dir = log_dir(root) / "alpha"
    active = list_segments(stream_dir)[-1]
    path = stream_dir / segment_name(active)
    size = path.stat().st_size
    with open(path, "ab") as handle:
        handle.write(b'{"seq": 302, "ts": 1.0, "ty')
    assert end_offset(stream_dir) == Offset(active, size, -1)
    assert end_offset(log_dir(root) / "missing") == Offset()


def run_broadcaster(root: Path, steps: int) -> tuple[list[int], list[int]]:
    """Start a broadcaster on ``root``, log ``steps`` more steps; the seqs it sent, and
    the seqs the log had before."""
    received: list[int] = []
    before = drain(LogReader(root), "alpha", -1)

    last: list[int] = []

    def write() -> None:
        write_run(root, "alpha", steps, resume=True, first_step=300, project="pa")
        last.append(drain(LogReader(root), "alpha", -1)[-1])

    broadcast_while(
        root,
        write,
        lambda chunk: received.extend(e["seq"] for e in chunk.events),
        lambda: bool(received) and received[-1] == last[0],
        projects=["pa"],
    )
    return received, before


def test_the_broadcaster_sends_only_new_events_in_order(root: Path) -> None:
    received, before = run_broadcaster(root, 50)
    assert received[0] == before[-1] + 1 and len(received) > 50
    assert received == list(range(received[0], received[-1] + 1))


def test_an_idle_tail_reads_lists_and_checks_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broadcaster = Broadcaster(root, Hub())
    reader = broadcaster.tail_reader
    offsets = broadcaster.start({})
    reader.poll(offsets)  # the first round reads every stream (parking the finished ones)
    write_run(root, "alpha", 5, resume=True, first_step=300, project="pa")
    looked: list[object] = []

    def counted(real: Callable[..., object]) -> object:
        return lambda *args, **kwargs: (looked.append(args), real(*args, **kwargs))[1]

    for name in ("listdir", "scandir", "stat", "open"):
        monkeypatch.setattr(os, name, counted(getattr(os, name)))
    monkeypatch.setattr(builtins, "open", counted(builtins.open))
    assert [reader.poll(offsets) for _ in range(3)] == [[], [], []]
    assert looked == [], "the tail looked at the log with no client connected"


def test_a_client_joining_an_idle_hub_gets_what_arrives_after_it_joined(root: Path) -> None:
    hub = Hub()
    broadcaster = Broadcaster(root, hub)
    reader = broadcaster.tail_reader
    offsets = broadcaster.start({})
    assert reader.poll(offsets) == [] and not hub.armed
    write_run(root, "alpha", 5, resume=True, first_step=300, project="pa")
    before = drain(LogReader(root), "alpha", -1)[-1]

    async def scenario() -> list[int]:
        joining = asyncio.ensure_future(hub.join(Subscriber()))
        await asyncio.sleep(0)
        assert not joining.done(), "a client joined before the tail skipped to the end"
        skipped = await asyncio.to_thread(reader.poll, offsets)
        offsets.update({batch.stream: batch.offset for batch in skipped})
        assert all(not batch.events for batch in skipped)
        await asyncio.wait_for(joining, 10)
        write_run(root, "alpha", 5, resume=True, first_step=305, project="pa")
        batches = await asyncio.to_thread(reader.poll, offsets)
        return [event["seq"] for batch in batches for event in batch.events]

    seqs = asyncio.run(scenario())
    assert seqs and seqs == list(range(before + 1, before + 1 + len(seqs)))
    assert seqs[-1] == drain(LogReader(root), "alpha", -1)[-1]


def test_the_hub_without_a_loop_drops_quietly() -> None:
    hub = Hub()
    hub.publish([chunk(0, 1)])
    loop = asyncio.new_event_loop()
    hub.attach(loop)
    loop.close()
    hub.publish([chunk(0, 1)])


def test_the_stream_directory_reads_the_run_event_of_an_old_stream(root: Path) -> None:
    broadcaster = Broadcaster(root)
    assert broadcaster.directory.info("alpha") == StreamInfo("alpha", "pa")
    assert broadcaster.directory.info("ghost.3") == StreamInfo("ghost", None)
    assert broadcaster.directory.lookup("ghost.3") is None
    assert len(broadcaster.directory) == 1, "a stream the log does not hold was remembered"


def test_a_broadcaster_thread_stops_promptly(root: Path) -> None:
    thread = ConsumerThread(Broadcaster(root), root, interval=0.01)
    thread.start()
    stopped = threading.Event()
    threading.Thread(target=lambda: (thread.stop(5), stopped.set())).start()
    assert stopped.wait(10)


def test_finished_streams_are_not_read_again_when_the_first_client_joins(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first round parks ``alpha`` (finished); a client joining later costs it two
    stats, not a read: with thousands of finished runs that read was seconds."""
    write_run(root, "beta", 5, project="pa", finish=None)  # live: read every round
    past = time.time() - 3600
    os.utime(log_dir(root) / "alpha", (past, past))
    reads: Counter[str] = Counter()
    ends: list[Path] = []
    read, end = LogReader.read, broadcast.end_offset
    monkeypatch.setattr(
        LogReader, "read", lambda self, s, o=START: reads.update([s]) or read(self, s, o)
    )
    monkeypatch.setattr(broadcast, "end_offset", lambda path: ends.append(path) or end(path))
    hub = Hub()
    broadcaster = Broadcaster(root, hub)
    thread = ConsumerThread(broadcaster, root, interval=0.01, reader=broadcaster.tail_reader)

    async def scenario() -> None:
        hub.attach(asyncio.get_running_loop())
        await asyncio.to_thread(thread.start)
        try:
            await asyncio.to_thread(
                eventually, lambda: broadcaster.tail_reader.settled, 10, "the first round"
            )
            before, ends[:] = reads["alpha"], []
            await asyncio.wait_for(hub.join(Subscriber()), 10)
            rounds = reads["beta"]
            await asyncio.to_thread(
                eventually, lambda: reads["beta"] >= rounds + 20, 10, "20 rounds"
            )
            assert reads["alpha"] == before and before > 0
            assert log_dir(root) / "alpha" not in ends
        finally:
            await asyncio.to_thread(thread.stop, 10)

    asyncio.run(scenario())

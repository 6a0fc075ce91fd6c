"""``/ingest``'s hand-off to the DuckDB writer: the tables and offsets it commits are the
ones reading the log gives, whatever hand-offs are lost, stale or out of line."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.consumers.logs import read_tables
from tests.web.events import finish_event, metrics_event, run_event
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.handoff import MAX_BYTES, Given, Handoff, HandoffReader
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.eventlog import reader as reader_module
from waddle.eventlog.reader import Batch, Offset
from waddle.eventlog.segment import DEFAULT_SEGMENT_BYTES
from waddle.eventlog.writer import StreamWriter
from waddle.web import ingest_log
from waddle.web.ingest import check_lines, numbered_lines
from waddle.web.ingest_log import IngestLog

STREAMS = ("h1", "h2", "h3")
ROUNDS = 6


def rounds() -> list[list[tuple[str, list[dict[str, Any]]]]]:
    """Each round: every stream's next events (a run event first, a finish last)."""
    made = []
    for index in range(ROUNDS):
        parts = []
        for stream in STREAMS:
            first = 1 + index * 5
            events: list[dict[str, Any]] = [run_event(stream)] if index == 0 else []
            events += [metrics_event(seq) for seq in range(first, first + 5)]
            if stream == "h2" and index == 2:
                events[-1]["data"] = {"loss": "NaN"}  # as the log spells a NaN
            if index == ROUNDS - 1:
                events.append(finish_event(first + 5))
            parts.append((stream, events))
        made.append(parts)
    return made


def ingest(log: IngestLog, parts: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Check and write the parts as ``/ingest/batch`` does (NDJSON lines as received)."""
    checked = []
    for stream, events in parts:
        body = b"".join(orjson.dumps(event) + b"\n" for event in events)
        values, lines = check_lines(stream, numbered_lines(body), text=body)
        checked.append((stream, values, lines))
    log.append_parts(checked)


def lose_none(calls: int) -> bool:
    return False


def lose_every_other(calls: int) -> bool:
    return calls % 2 == 1


def lose_all(calls: int) -> bool:
    return True


@pytest.mark.parametrize("lose", [lose_none, lose_every_other, lose_all])
@pytest.mark.parametrize(
    ("max_bytes", "segment_bytes"),
    [(MAX_BYTES, DEFAULT_SEGMENT_BYTES), (800, DEFAULT_SEGMENT_BYTES), (MAX_BYTES, 900)],
)
def test_the_writer_commits_what_reading_the_log_commits(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lose: Callable[[int], bool],
    max_bytes: int,
    segment_bytes: int,
) -> None:
    """Rounds of ingest, each followed by a writer round or not (hand-offs merged, or
    stale once the log was read past them); some hand-offs lost, or more than the limit
    held; segments rolling over between parts. The tables and offsets equal a writer's
    that only read the log."""
    root = tmp_path / "host"
    monkeypatch.setattr(
        ingest_log, "StreamWriter", functools.partial(StreamWriter, segment_bytes=segment_bytes)
    )
    handoff = Handoff(max_bytes=max_bytes)
    give = handoff.give
    calls = [0]

    def giving(parts: list[Given]) -> None:
        kept = []
        for stream, start, end, events in parts:
            calls[0] += 1
            kept.append((stream, start, end, None if lose(calls[0]) else events))
        give(kept)

    monkeypatch.setattr(handoff, "give", giving)
    decoded: list[bytes] = []
    decode = reader_module.decode
    monkeypatch.setattr(reader_module, "decode", lambda *a: decoded.append(a[0]) or decode(*a))
    log = IngestLog(root, handoff=handoff)
    writer = DuckDBWriter(root, root / "handed.duckdb", snapshot_interval=0)
    writer.start({})
    reader = HandoffReader(root, handoff=handoff)
    try:
        for index, parts in enumerate(rounds()):
            ingest(log, parts)
            if index % 3 != 1:  # every third round the writer waits: hand-offs pile up
                writer.handle(reader.poll(writer.taken))
                writer.commit()
        while batches := reader.poll(writer.taken):
            writer.handle(batches)
        writer.commit()
    finally:
        writer.close()
        log.close()
    monkeypatch.setattr(reader_module, "decode", decode)
    reference = root / "read.duckdb"
    run_consumer(
        DuckDBWriter(root, reference, snapshot_interval=0), root, threading.Event(), once=True
    )
    assert read_tables(root / "handed.duckdb") == read_tables(reference)
    parsed = sum(chunk.count(b"\n") for chunk in decoded)  # events read from the log
    total = sum(len(events) for parts in rounds() for _, events in parts)
    if lose is lose_all:
        assert parsed == total
    elif lose is lose_none and max_bytes > 800 and segment_bytes > 900:
        # From the log: the part with a NaN, and what a finish left (its writer closed).
        assert parsed < total / 2


def test_a_hand_off_serves_only_the_offset_it_continues() -> None:
    handoff = Handoff(max_bytes=40)
    first, second = [metrics_event(1)], [metrics_event(2)]
    handoff.give([("s", Offset(0, 10, 0), Offset(0, 20, 1), first)])
    handoff.give([("s", Offset(0, 20, 1), Offset(0, 30, 2), second)])
    assert handoff.take("s", Offset(0, 0, -1)) is None  # a gap before it: read the log
    batch = handoff.take("s", Offset(0, 10, 0))
    assert batch is not None
    assert (batch.events, batch.offset, batch.drained) == (first + second, Offset(0, 30, 2), True)
    assert handoff.take("s", Offset(0, 30, 2)) == Batch("s", [], Offset(0, 30, 2), drained=True)
    handoff.give([("s", Offset(0, 30, 2), Offset(0, 40, 3), [metrics_event(3)])])
    handoff.give([("s", Offset(0, 40, 3), Offset(0, 50, 4), None)])  # written, not handed off
    batch = handoff.take("s", Offset(0, 30, 2))
    assert batch is not None and batch.offset == Offset(0, 40, 3)
    assert not batch.drained  # the log holds more: the reader comes back for it
    handoff.give([("s", Offset(0, 50, 4), Offset(0, 60, 5), [metrics_event(5)])])
    # Read from the log already: the part is stale, and nothing was written after it.
    assert handoff.take("s", Offset(0, 60, 5)) == Batch("s", [], Offset(0, 60, 5), drained=True)
    handoff.give([("s", Offset(6, 0, 5), Offset(6, 10, 6), [metrics_event(6)])])  # rolled over
    batch = handoff.take("s", Offset(0, 60, 5))
    assert batch is not None and batch.offset == Offset(6, 10, 6)
    handoff.give(
        [("s", Offset(6, 10, 6), Offset(6, 60, 11), [metrics_event(n) for n in range(7, 12)])]
    )
    assert handoff.take("s", Offset(6, 10, 6)) is None  # past the limit: not held
    handoff.forget("s")  # its writer closed: someone else may write the stream
    assert handoff.take("s", Offset(6, 60, 11)) is None


def test_hand_offs_past_the_byte_limit_drop_the_streams_waiting_longest() -> None:
    handoff = Handoff(max_bytes=100)
    for stream in ("a", "b", "c"):  # 40 bytes of lines each: the third does not fit
        handoff.give([(stream, Offset(0, 0, -1), Offset(0, 40, 0), [metrics_event(0)])])
    assert handoff.take("a", Offset(0, 0, -1)) is None  # dropped: read from the log
    for stream in ("b", "c"):
        batch = handoff.take(stream, Offset(0, 0, -1))
        assert batch is not None and batch.offset == Offset(0, 40, 0)
    big = [metrics_event(n) for n in range(1, 4)]
    handoff.give([("a", Offset(0, 40, 0), Offset(0, 160, 3), big)])  # over the limit alone
    assert handoff.take("a", Offset(0, 40, 0)) is None and handoff._held == 0


def test_a_stream_not_read_for_a_while_lets_go_of_its_hand_offs() -> None:
    now = [0.0]
    handoff = Handoff(stale_after=30.0, clock=lambda: now[0])
    handoff.give([("idle", Offset(0, 0, -1), Offset(0, 40, 0), [metrics_event(0)])])
    handoff.give([("read", Offset(0, 0, -1), Offset(0, 40, 0), [metrics_event(0)])])
    now[0] = 31.0
    handoff.give([("read", Offset(0, 40, 0), Offset(0, 80, 1), [metrics_event(1)])])
    assert handoff.take("idle", Offset(0, 0, -1)) is None  # waited past 30 s: dropped
    assert handoff.take("read", Offset(0, 0, -1)) is None  # so was "read"'s first one
    batch = handoff.take("read", Offset(0, 40, 0))  # the one given since is held
    assert batch is not None and batch.offset == Offset(0, 80, 1)


def test_a_read_takes_hand_offs_up_to_the_readers_batch_bytes(tmp_path: Path) -> None:
    handoff = Handoff()
    for seq in range(3):
        start, end = Offset(0, seq * 100, seq - 1), Offset(0, seq * 100 + 100, seq)
        handoff.give([("s", start, end, [metrics_event(seq)])])
    reader = HandoffReader(tmp_path, handoff=handoff, batch_bytes=250)
    first = reader.read("s", Offset(0, 0, -1))
    assert (len(first.events), first.offset, first.drained) == (2, Offset(0, 200, 1), False)
    second = reader.read("s", first.offset)
    assert (len(second.events), second.offset, second.drained) == (1, Offset(0, 300, 2), True)


def test_a_writer_that_starts_again_reads_the_log_not_what_waited(tmp_path: Path) -> None:
    handoff = Handoff()
    handoff.give([("s", Offset(0, 0, -1), Offset(0, 40, 0), [metrics_event(0)])])
    stop = threading.Event()
    stop.set()
    assert list(HandoffReader(tmp_path, handoff=handoff).follow({}, stop)) == []
    assert handoff.take("s", Offset(0, 0, -1)) is None and handoff._held == 0

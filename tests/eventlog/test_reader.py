"""The tailing reader (waddle/eventlog/reader.py): offsets, roll-over, corruption, retention."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waddle.eventlog.reader import DEFAULT_BATCH_BYTES, LogReader, Offset
from waddle.eventlog.record import encode
from waddle.eventlog.segment import list_segments, segment_name
from waddle.eventlog.writer import StreamWriter

STREAM = "fx"


def metrics_line(seq: int, pad: int = 0) -> bytes:
    return encode({"seq": seq, "ts": 1.5, "type": "metrics", "step": seq, "data": {"p": "x" * pad}})


FIXED_TS = 1_764_633_600.125


def write_stream(root: Path, stream: str, count: int, segment_bytes: int = 512) -> Path:
    """A stream of ``count`` metrics events rolled over every ``segment_bytes``.

    Their ``ts`` is fixed: the clock's would vary the lines' lengths (a float's shortest
    spelling), hence where segments roll over and batches end, from one run to the next,
    and a property test's draws with them (Hypothesis then fails it as flaky)."""
    writer = StreamWriter(root / "log" / stream, segment_bytes=segment_bytes)
    for step in range(count):
        fields = {"ts": FIXED_TS, "step": step, "data": {"pad": "x" * (step % 50)}}
        writer.append("metrics", fields)
    writer.close()
    return root / "log" / stream


@pytest.mark.parametrize("batch_bytes", [7, 64, DEFAULT_BATCH_BYTES])
@pytest.mark.parametrize("sealed", [False, True], ids=["active", "sealed"])
def test_each_failure_mode_is_reported_skipped_and_reading_goes_on(
    tmp_path: Path,
    log_fixture,
    sealed: bool,
    batch_bytes: int,
    read_stream: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="waddle.eventlog")
    stream_dir = tmp_path / "log" / STREAM
    stream_dir.mkdir(parents=True)
    (stream_dir / segment_name(0)).write_bytes(log_fixture.data)
    expected_seqs = list(log_fixture.seqs)
    expected = [(segment_name(0), offset) for offset in log_fixture.bad_offsets]
    torn_and_sealed = sealed and log_fixture.torn_offset is not None
    if sealed:  # a roll-over: the next segment starts after the last seq of this one
        later = 1 if log_fixture.last_seq is None else log_fixture.last_seq + 1
        (stream_dir / segment_name(later)).write_bytes(metrics_line(later))
        expected_seqs.append(later)
    if torn_and_sealed:
        expected.append((segment_name(0), log_fixture.torn_offset))
    if sealed and log_fixture.last_seq is None:  # an empty segment 0 held no seq 0
        expected.append((segment_name(later), 0))

    drained = read_stream(tmp_path, STREAM, batch_bytes=batch_bytes)

    assert drained.seqs == expected_seqs
    assert [(c.segment, c.offset) for c in drained.corrupt] == expected
    if torn_and_sealed:
        assert "torn" in drained.corrupt[-1].reason
    for item in drained.corrupt:
        assert item.stream == STREAM
        assert f"'{STREAM}'" in str(item) and item.segment in str(item)
        assert f"byte {item.offset}" in str(item)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == len(drained.corrupt)
    assert all(str(item) in text for item, text in zip(drained.corrupt, messages, strict=True))
    if not sealed and log_fixture.torn_offset is not None:
        assert drained.offset.position == log_fixture.torn_offset


@settings(deadline=None, max_examples=80)
@given(
    pads=st.lists(st.integers(0, 120), min_size=1, max_size=12),
    cut=st.floats(0, 1),
    batch_bytes=st.sampled_from([1, 16, 100, DEFAULT_BATCH_BYTES]),
)
def test_a_segment_cut_at_any_byte_reads_its_complete_lines_then_the_rest(
    pads: list[int], cut: float, batch_bytes: int, read_stream: Callable
) -> None:
    lines = [metrics_line(seq, pad) for seq, pad in enumerate(pads)]
    data = b"".join(lines)
    at = round(cut * len(data))
    whole = sum(1 for end in accumulate(map(len, lines)) if end <= at)
    with tempfile.TemporaryDirectory() as root:
        segment = Path(root, "log", STREAM, segment_name(0))
        segment.parent.mkdir(parents=True)
        segment.write_bytes(data[:at])
        first = read_stream(Path(root), STREAM, batch_bytes=batch_bytes)
        assert first.seqs == list(range(whole))
        assert first.offset.position == sum(map(len, lines[:whole]))
        with segment.open("ab") as handle:
            handle.write(data[at:])
        rest = read_stream(Path(root), STREAM, first.offset, batch_bytes)
    assert first.corrupt == rest.corrupt == []
    assert rest.seqs == list(range(whole, len(lines)))


@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_any_batch_size_and_any_stops_and_resumes_yield_each_event_once(
    data: st.DataObject, read_stream: Callable
) -> None:
    counts = {"a": data.draw(st.integers(0, 40)), "b": data.draw(st.integers(1, 40))}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for stream, count in counts.items():
            write_stream(root, stream, count, segment_bytes=data.draw(st.integers(100, 800)))
        offsets: dict[str, Offset] = {}
        seen: dict[str, list[int]] = {stream: [] for stream in counts}
        handed_out: dict[str, list[Offset]] = {stream: [Offset()] for stream in counts}
        for _ in range(data.draw(st.integers(0, 6))):
            reader = LogReader(root, batch_bytes=data.draw(st.integers(1, 1024)))
            for _ in range(data.draw(st.integers(1, 4))):
                for batch in reader.poll(offsets):
                    assert batch.corrupt == [] and not batch.restarted
                    seen[batch.stream] += [e["seq"] for e in batch.events]
                    offsets[batch.stream] = batch.offset
                    handed_out[batch.stream].append(batch.offset)
            offsets = _restart(offsets, handed_out, data)
        for stream in counts:
            seen[stream] += read_stream(root, stream, offsets.get(stream, Offset())).seqs
    assert seen == {stream: list(range(count)) for stream, count in counts.items()}


def _restart(
    offsets: dict[str, Offset], handed_out: dict[str, list[Offset]], data: st.DataObject
) -> dict[str, Offset]:
    """A consumer restarting from stored offsets, some rewound to an older position (a
    replay after a crash) but keeping the last seq it took."""
    restored = {
        s: Offset.from_json(json.loads(json.dumps(o.to_json()))) for s, o in offsets.items()
    }
    for stream, offset in restored.items():
        if data.draw(st.booleans()):
            older = data.draw(st.sampled_from(handed_out[stream]))
            restored[stream] = Offset(older.segment, older.position, offset.seq)
    return restored


def test_follow_crosses_roll_overs_while_the_writer_writes(tmp_path: Path) -> None:
    count = 400
    writer = StreamWriter(tmp_path / "log" / STREAM, segment_bytes=1024)
    stop = threading.Event()
    timeout = threading.Timer(20, stop.set)

    def produce() -> None:
        for step in range(count):
            writer.append("metrics", {"step": step, "data": {"pad": "x" * (step % 90)}})
        writer.close()

    producer = threading.Thread(target=produce)
    seen: list[int] = []
    timeout.start()
    producer.start()
    try:
        for batches in LogReader(tmp_path, batch_bytes=300).follow({}, stop, interval=0.001):
            seen += [e["seq"] for batch in batches for e in batch.events]
            assert not any(batch.corrupt for batch in batches)
            if len(seen) >= count:
                break
    finally:
        producer.join()
        timeout.cancel()
    assert seen == list(range(count))
    assert len(list_segments(tmp_path / "log" / STREAM)) > 10


def test_poll_discovers_new_streams_and_ignores_what_is_not_one(tmp_path: Path) -> None:
    write_stream(tmp_path, "run-a", 2)
    (tmp_path / "log" / ".partial").mkdir()
    (tmp_path / "log" / "stray.txt").write_text("not a stream")
    reader = LogReader(tmp_path)
    offsets: dict[str, Offset] = {}

    def poll() -> dict[str, list[int]]:
        batches = reader.poll(offsets)
        offsets.update({b.stream: b.offset for b in batches})
        return {b.stream: [e["seq"] for e in b.events] for b in batches}

    assert poll() == {"run-a": [0, 1]}
    assert poll() == {}
    write_stream(tmp_path, "run-a.1", 3)
    assert poll() == {"run-a.1": [0, 1, 2]}
    assert reader.streams() == ["run-a", "run-a.1"]


@pytest.mark.parametrize("taken", [-1, 0, 4, 9])
def test_events_not_above_the_offset_seq_are_skipped(
    tmp_path: Path, taken: int, read_stream: Callable
) -> None:
    write_stream(tmp_path, STREAM, 10)
    assert read_stream(tmp_path, STREAM, Offset(0, 0, taken)).seqs == list(range(taken + 1, 10))


@pytest.mark.parametrize("where", ["end", "middle"])
def test_an_offset_whose_segment_was_deleted_continues_at_the_next_one(
    tmp_path: Path, where: str, read_stream: Callable
) -> None:
    """From the end of the deleted segment nothing is lost; from its middle, the rest of
    it is, and that is reported where reading goes on."""
    stream_dir = write_stream(tmp_path, STREAM, 60)
    first, second, *_ = list_segments(stream_dir)
    reader = LogReader(tmp_path)
    whole = reader.read(STREAM, Offset(second, 0, first - 1))
    assert whole.offset.segment == second and whole.events[0]["seq"] == second
    if where == "end":
        offset = whole.offset
    else:
        first_line = (stream_dir / segment_name(second)).read_bytes().index(b"\n") + 1
        offset = Offset(second, first_line, second)
    (stream_dir / segment_name(second)).unlink()
    (stream_dir / segment_name(first)).unlink()
    drained = read_stream(tmp_path, STREAM, offset)
    after = list_segments(stream_dir)[0]
    assert drained.seqs == list(range(after, 60))
    if where == "end":
        assert drained.corrupt == []
    else:
        [lost] = drained.corrupt
        assert (lost.segment, lost.offset) == (segment_name(after), 0)
        assert f"events {second + 1} to {after - 1} are missing" in lost.reason


def test_a_line_longer_than_batch_bytes_is_read_whole(tmp_path: Path) -> None:
    writer = StreamWriter(tmp_path / "log" / STREAM)
    big = {"blob": "é" * 100_000}
    for data in ({"small": 1}, big, {"small": 2}):
        writer.append("metrics", {"step": 0, "data": data})
    writer.close()
    reader = LogReader(tmp_path, batch_bytes=64)
    offset = Offset()
    events: list[dict[str, Any]] = []
    for _ in range(3):
        batch = reader.read(STREAM, offset)
        assert batch.corrupt == []
        events += batch.events
        offset = batch.offset
    assert [e["data"] for e in events] == [{"small": 1}, big, {"small": 2}]


def test_a_batch_says_whether_it_reached_the_end_of_the_log(tmp_path: Path) -> None:
    """``drained`` lets a hinted stream wait for its next hint: only a read that reached
    the end of the active segment may say so, not one cut by the batch size or one that
    stopped in a sealed segment."""
    write_stream(tmp_path, STREAM, 40, segment_bytes=512)
    assert len(list_segments(tmp_path / "log" / STREAM)) > 2
    reader = LogReader(tmp_path, batch_bytes=64)
    offset, drained = Offset(), []
    while not drained or not drained[-1]:
        batch = reader.read(STREAM, offset)
        drained.append(batch.drained)
        offset = batch.offset
        assert len(drained) < 1000
    assert offset.seq == 39 and drained.count(True) == 1
    assert reader.read(STREAM, offset).drained
    whole = LogReader(tmp_path).read(STREAM, Offset(list_segments(tmp_path / "log" / STREAM)[-1]))
    assert whole.events and whole.drained


def test_a_stream_folder_is_listed_again_only_when_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream_dir = write_stream(tmp_path, STREAM, 40)
    active = stream_dir / segment_name(list_segments(stream_dir)[-1])
    settled = time.time() - 60
    os.utime(stream_dir, (settled, settled))
    listed: list[object] = []
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or listdir(path))
    reader, offset, seqs = LogReader(tmp_path), Offset(), []

    def read() -> None:
        nonlocal offset
        for _ in range(100):
            batch = reader.read(STREAM, offset)
            if batch.offset == offset:
                return
            seqs.extend(event["seq"] for event in batch.events)
            offset = batch.offset

    read()
    for seq in range(40, 45):  # the active segment grows: the folder is as it was
        with open(active, "ab") as handle:
            handle.write(metrics_line(seq))
        read()
    assert seqs == list(range(45)) and len(listed) == 1
    (stream_dir / segment_name(45)).write_bytes(metrics_line(45))  # rotated
    read()
    assert seqs == list(range(46)) and len(listed) > 1


@pytest.mark.parametrize("start", [0, 1], ids=["from the start", "from an offset"])
def test_a_read_takes_a_whole_batch_beyond_its_first_small_read(tmp_path: Path, start: int) -> None:
    """A read asks for 64 KiB first (a live stream's news is small) and the rest of the
    batch after it: a batch still holds every whole line within ``batch_bytes``."""
    lines = [metrics_line(seq, pad=300) for seq in range(1000)]
    stream_dir = tmp_path / "log" / STREAM
    stream_dir.mkdir(parents=True)
    (stream_dir / segment_name(0)).write_bytes(b"".join(lines))
    position = len(lines[0]) if start else 0
    offset = Offset(0, position, 0) if start else Offset()
    ends = list(accumulate(len(line) for line in lines[start:]))
    whole = [end for end in ends if end <= 200_000]
    batch = LogReader(tmp_path, batch_bytes=200_000).read(STREAM, offset)
    assert [event["seq"] for event in batch.events] == list(range(start, start + len(whole)))
    assert batch.offset == Offset(0, position + whole[-1], start + len(whole) - 1)
    assert len(whole) > 2 * (64 << 10) // len(lines[0]) and not batch.drained

"""Faults that lose events without a bad line (waddle/eventlog/reader.py): a deleted
segment, a seq corrupted upwards, a stream deleted and created again. Each is reported
(stream, segment, byte offset) like a bad line, and reading goes on."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waddle.eventlog import reader as reader_module
from waddle.eventlog import seek
from waddle.eventlog.reader import DEFAULT_BATCH_BYTES, LogReader, Offset
from waddle.eventlog.record import encode
from waddle.eventlog.segment import segment_name
from waddle.eventlog.writer import StreamWriter

STREAM = "fx"
BATCHES = [16, 200, DEFAULT_BATCH_BYTES]
FAR = 10**12


def line(seq: int, pad: int = 0) -> bytes:
    return encode({"seq": seq, "ts": 1.5, "type": "metrics", "step": seq, "data": {"p": "x" * pad}})


def write_segments(root: Path, *segments: list[bytes]) -> Path:
    """A stream folder whose segments hold these lines, each named by its first seq."""
    stream_dir = root / "log" / STREAM
    stream_dir.mkdir(parents=True)
    first = 0
    for lines in segments:
        (stream_dir / segment_name(first)).write_bytes(b"".join(lines))
        first += len(lines)
    return stream_dir


def starts(lines: list[bytes]) -> list[int]:
    """Where each line starts in a segment made of ``lines``."""
    return [sum(map(len, lines[:index])) for index in range(len(lines))]


@pytest.mark.parametrize("batch_bytes", BATCHES)
def test_a_deleted_middle_segment_is_reported_where_reading_goes_on(
    tmp_path: Path, read_stream: Callable, batch_bytes: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="waddle.eventlog")
    stream_dir = write_segments(
        tmp_path, *[[line(10 * s + i) for i in range(10)] for s in range(4)]
    )
    (stream_dir / segment_name(10)).unlink()
    drained = read_stream(tmp_path, STREAM, batch_bytes=batch_bytes)
    assert drained.seqs == [*range(10), *range(20, 40)]
    [lost] = drained.corrupt
    assert (lost.stream, lost.segment, lost.offset) == (STREAM, segment_name(20), 0)
    assert "events 10 to 19 are missing" in lost.reason
    assert [str(lost)] == [
        r.getMessage().removeprefix("waddle: log fault in ") for r in caplog.records
    ]


@pytest.mark.parametrize("batch_bytes", BATCHES)
def test_a_deleted_middle_segment_is_reported_to_a_reader_that_stopped_before_it(
    tmp_path: Path, read_stream: Callable, batch_bytes: int
) -> None:
    stream_dir = write_segments(
        tmp_path, [line(i) for i in range(5)], [line(5 + i) for i in range(5)], [line(10)]
    )
    first = read_stream(tmp_path, STREAM, batch_bytes=batch_bytes)
    assert first.seqs == list(range(11))
    (stream_dir / segment_name(10)).unlink()
    (stream_dir / segment_name(11)).write_bytes(line(11))
    (stream_dir / segment_name(5)).unlink()
    stopped = Offset(0, (stream_dir / segment_name(0)).stat().st_size, 4)
    drained = read_stream(tmp_path, STREAM, stopped, batch_bytes)
    assert drained.seqs == [11]
    assert [(c.segment, c.offset) for c in drained.corrupt] == [(segment_name(11), 0)]
    assert "events 5 to 10 are missing" in drained.corrupt[0].reason


@pytest.mark.parametrize("seq", [-1, 2], ids=["unknown", "behind"])
def test_an_offset_moved_without_reading_is_checked_against_the_file_not_reported(
    tmp_path: Path, read_stream: Callable, seq: int
) -> None:
    """The broadcaster skips to the end of a stream while nobody listens, keeping an old
    seq (or none): what follows is no gap."""
    lines = [line(i, pad=i) for i in range(10)]
    stream_dir = write_segments(tmp_path, lines[:6], lines[6:])
    middle = Offset(0, starts(lines)[4], seq)
    end = Offset(0, (stream_dir / segment_name(0)).stat().st_size, seq)
    assert read_stream(tmp_path, STREAM, middle).corrupt == []
    assert read_stream(tmp_path, STREAM, middle).seqs == list(range(4, 10))
    assert read_stream(tmp_path, STREAM, end).corrupt == []
    assert read_stream(tmp_path, STREAM, end).seqs == list(range(6, 10))


@pytest.mark.parametrize("batch_bytes", BATCHES)
@pytest.mark.parametrize("where", [3, 5, 9], ids=["middle", "end-of-sealed", "last-of-chunk"])
def test_a_seq_corrupted_upwards_is_reported_and_skipped_not_the_events_after_it(
    tmp_path: Path, read_stream: Callable, batch_bytes: int, where: int
) -> None:
    lines = [line(i) for i in range(12)]
    good = lines[where]
    lines[where] = good.replace(b'"seq":%d,' % where, b'"seq":%d,' % (FAR + where))
    write_segments(tmp_path, lines[:6], lines[6:])
    drained = read_stream(tmp_path, STREAM, batch_bytes=batch_bytes)
    assert drained.seqs == [seq for seq in range(12) if seq != where]
    [corrupt] = drained.corrupt
    segment, index = (0, where) if where < 6 else (6, where - 6)
    part = lines[:6] if where < 6 else lines[6:]
    assert (corrupt.segment, corrupt.offset) == (segment_name(segment), starts(part)[index])
    assert f"seq {FAR + where} breaks the order" in corrupt.reason and "corrupt" in corrupt.reason


def test_a_seq_corrupted_upwards_before_a_torn_line_is_judged_by_the_next_segment(
    tmp_path: Path, read_stream: Callable
) -> None:
    lines = [line(i) for i in range(6)]
    lines[5] = line(FAR)
    stream_dir = write_segments(tmp_path, [*lines, line(6)[:20]])
    (stream_dir / segment_name(7)).write_bytes(line(7))
    drained = read_stream(tmp_path, STREAM)
    assert drained.seqs == [0, 1, 2, 3, 4, 7]
    assert [c.offset for c in drained.corrupt] == starts([*lines, b""])[5:]
    assert "corrupt" in drained.corrupt[0].reason and "torn" in drained.corrupt[1].reason


def test_a_seq_corrupted_upwards_at_the_live_end_waits_for_the_next_line(
    tmp_path: Path, read_stream: Callable
) -> None:
    lines = [line(i) for i in range(10)]
    lines[9] = line(FAR)
    stream_dir = write_segments(tmp_path, lines)
    first = read_stream(tmp_path, STREAM)
    assert first.seqs == list(range(9))
    assert [(c.offset, "waits" in c.reason) for c in first.corrupt] == [(starts(lines)[9], True)]
    again = read_stream(tmp_path, STREAM, first.offset)
    assert (again.seqs, again.corrupt, again.offset) == ([], [], first.offset)
    with (stream_dir / segment_name(0)).open("ab") as handle:
        handle.write(line(10) + line(11))
    rest = read_stream(tmp_path, STREAM, first.offset)
    assert rest.seqs == [10, 11]
    assert [(c.offset, "corrupt" in c.reason) for c in rest.corrupt] == [(starts(lines)[9], True)]


@settings(deadline=None, max_examples=80)
@given(data=st.data())
def test_one_corrupt_seq_anywhere_costs_its_line_only(
    data: st.DataObject, read_stream: Callable
) -> None:
    """Any stream, any segment boundaries, any batch size, one line's seq raised by any
    amount (the line is not the last: that one waits): that line is reported, and only
    it is missing."""
    count = data.draw(st.integers(2, 30))
    where = data.draw(st.integers(0, count - 2))
    lines = [line(seq, pad=seq % 7) for seq in range(count)]
    lines[where] = line(where + data.draw(st.integers(1, FAR)), pad=where % 7)
    cuts = sorted(data.draw(st.sets(st.integers(1, count - 1), max_size=4)))
    segments = [lines[a:b] for a, b in zip([0, *cuts], [*cuts, count], strict=True)]
    with tempfile.TemporaryDirectory() as root:
        write_segments(Path(root), *segments)
        drained = read_stream(Path(root), STREAM, batch_bytes=data.draw(st.sampled_from(BATCHES)))
    assert drained.seqs == [seq for seq in range(count) if seq != where]
    [report] = drained.corrupt
    first = max([0, *[cut for cut in cuts if cut <= where]])
    assert (report.segment, report.offset) == (
        segment_name(first),
        starts(lines[first:])[where - first],
    )


@pytest.mark.parametrize("batch_bytes", BATCHES)
def test_a_small_upward_jump_is_a_corrupt_seq_too(
    tmp_path: Path, read_stream: Callable, batch_bytes: int
) -> None:
    """57 read as 97: the lines up to the real 97 must not be taken for duplicates."""
    lines = [line(i) for i in range(100)]
    lines[57] = line(97)
    write_segments(tmp_path, lines)
    drained = read_stream(tmp_path, STREAM, batch_bytes=batch_bytes)
    assert drained.seqs == [seq for seq in range(100) if seq != 57]
    assert [c.offset for c in drained.corrupt] == [starts(lines)[57]]


def consumed(root: Path, count: int, segment_bytes: int, read_stream: Callable) -> Offset:
    """The offset of a reader that took all of a stream of ``count`` events."""
    writer = StreamWriter(root / "log" / STREAM, segment_bytes=segment_bytes)
    for step in range(count):
        writer.append("metrics", {"step": step, "data": {"old": True, "pad": "x" * 40}})
    writer.close()
    drained = read_stream(root, STREAM)
    assert drained.seqs == list(range(count))
    return drained.offset


@pytest.mark.parametrize(
    ("old", "new", "segment_bytes"),
    [(40, 3, 400), (10, 3, 10**6), (10, 30, 10**6)],
    ids=["newest-segment-gone", "segment-shorter", "offset-mid-line"],
)
def test_a_stream_deleted_and_created_again_is_reported_and_read_as_a_new_epoch(
    tmp_path: Path,
    old: int,
    new: int,
    segment_bytes: int,
    read_stream: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="waddle.eventlog")
    offset = consumed(tmp_path, old, segment_bytes, read_stream)
    assert (offset.segment > 0) == (segment_bytes == 400)
    shutil.rmtree(tmp_path / "log" / STREAM)
    reader = LogReader(tmp_path)
    gone = reader.read(STREAM, offset)
    assert (gone.events, gone.corrupt, gone.offset, gone.restarted) == ([], [], offset, False)
    writer = StreamWriter(tmp_path / "log" / STREAM, segment_bytes=segment_bytes)
    for step in range(new):
        writer.append("metrics", {"step": step, "data": {"new": True, "pad": "y" * 7}})
    writer.close()
    batch = reader.read(STREAM, offset)
    assert batch.restarted
    assert [e["seq"] for e in batch.events] == list(range(new))
    assert all(e["data"]["new"] for e in batch.events)
    [report] = batch.corrupt
    assert (report.stream, report.segment, report.offset) == (
        STREAM,
        segment_name(offset.segment),
        offset.position,
    )
    assert "deleted and created again" in report.reason and "id" in report.reason
    assert str(report) in caplog.text
    after = reader.read(STREAM, batch.offset)
    assert (after.events, after.corrupt, after.restarted) == ([], [], False)


def test_an_over_long_line_skipped_in_parts_is_no_new_epoch(
    tmp_path: Path, read_stream: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "MAX_LINE_BYTES", 100)
    monkeypatch.setattr(seek, "MAX_LINE_BYTES", 100)  # the limit of reading backwards
    lines = [line(0), line(1, pad=500), line(2)]
    write_segments(tmp_path, lines)
    drained = read_stream(tmp_path, STREAM, batch_bytes=16)
    assert drained.seqs == [0, 2]
    assert all(c.segment == segment_name(0) for c in drained.corrupt)
    assert "longer than the limit" in drained.corrupt[0].reason
    assert not any("created again" in c.reason for c in drained.corrupt)

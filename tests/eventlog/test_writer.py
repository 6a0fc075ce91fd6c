"""The stream writer (waddle/eventlog/writer.py), alone and inside real producer processes.

What is checked is what a reader sees afterwards: every segment holds only complete
lines, seqs are gapless, and every event whose call returned is there exactly once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import waddle
from tests.helpers import eventually
from waddle.errors import EncodeError, StreamLockedError, UsageError, WaddleError
from waddle.eventlog import writer as writer_module
from waddle.eventlog.record import decode
from waddle.eventlog.segment import DEFAULT_SEGMENT_BYTES, list_segments, segment_name
from waddle.eventlog.writer import StreamWriter

STREAM = "s"


def files_under(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: a before/after picture of the log."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_well_formed(stream_dir: Path, segment_bytes: int) -> list[int]:
    """Segments named by their first seq, complete lines only, sizes within the limit.

    Returns the seqs of the stream in file order.
    """
    seqs: list[int] = []
    for first in list_segments(stream_dir):
        data = (stream_dir / segment_name(first)).read_bytes()
        events, used, bad = decode(data)
        assert (used, bad) == (len(data), []), f"segment {first} holds a torn or bad line"
        assert events and events[0]["seq"] == first
        assert len(data) <= segment_bytes or len(events) == 1
        seqs += [e["seq"] for e in events]
    assert seqs == list(range(len(seqs)))
    return seqs


@dataclass
class Producer:
    """Metrics going into stream ``stream``, through a bare writer or a whole Run."""

    stream: str
    log: Callable[[dict[str, Any]], object]
    close: Callable[[], object]


@pytest.fixture(params=["writer", "run"])
def open_producer(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Producer]:
    def open_(segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> Producer:
        if request.param == "writer":
            writer = StreamWriter(tmp_path / "log" / STREAM, segment_bytes=segment_bytes)
            return Producer(
                STREAM,
                lambda data: writer.append("metrics", {"step": 0, "data": data}),
                writer.close,
            )
        run = waddle.init(
            project="tests",
            root=tmp_path,
            id=STREAM,
            system_metrics=False,
            segment_bytes=segment_bytes,
        )
        return Producer(run.stream, run.log, run.finish)

    return open_


@settings(deadline=None, max_examples=60)
@given(data=st.data(), segment_bytes=st.sampled_from([256, DEFAULT_SEGMENT_BYTES]))
def test_any_metric_dicts_round_trip_through_writer_and_reader(
    data: st.DataObject,
    segment_bytes: int,
    metric_data: st.SearchStrategy,
    read_stream: Callable,
    canonical: Callable,
) -> None:
    logged = data.draw(st.lists(metric_data, max_size=6))
    with tempfile.TemporaryDirectory() as root:
        writer = StreamWriter(Path(root, "log", STREAM), segment_bytes=segment_bytes)
        seqs = [
            writer.append("metrics", {"step": step, "data": d}) for step, d in enumerate(logged)
        ]
        writer.close()
        drained = read_stream(Path(root), STREAM)
    assert seqs == list(range(len(logged)))
    assert drained.corrupt == []
    assert drained.seqs == seqs
    assert canonical([e["data"] for e in drained.events]) == canonical(logged)


@settings(deadline=None, max_examples=60)
@given(
    segment_bytes=st.integers(64, 2048),
    pads=st.lists(st.integers(0, 700), min_size=1, max_size=40),
)
def test_seqs_are_gapless_and_segments_named_by_first_seq_across_roll_overs(
    segment_bytes: int, pads: list[int], read_stream: Callable
) -> None:
    with tempfile.TemporaryDirectory() as root:
        stream_dir = Path(root, "log", STREAM)
        writer = StreamWriter(stream_dir, segment_bytes=segment_bytes)
        seqs = [writer.append("metrics", {"step": 0, "data": {"pad": "x" * n}}) for n in pads]
        writer.close()
        assert seqs == list(range(len(pads)))
        assert assert_well_formed(stream_dir, segment_bytes) == seqs
        assert read_stream(Path(root), STREAM).seqs == seqs


def test_unencodable_value_raises_at_the_call_and_writes_nothing(
    tmp_path: Path, open_producer: Callable[..., Producer], read_stream: Callable
) -> None:
    producer = open_producer()
    producer.log({"ok": 1})
    before = files_under(tmp_path)
    with pytest.raises(EncodeError, match="model"):
        producer.log({"ok": 2, "model": object()})
    assert files_under(tmp_path) == before
    producer.log({"ok": 3})
    producer.close()
    drained = read_stream(tmp_path, producer.stream)
    assert drained.seqs == list(range(len(drained.seqs)))
    assert [e["data"] for e in drained.events if e["type"] == "metrics"] == [{"ok": 1}, {"ok": 3}]


def test_append_event_takes_only_the_next_seq(tmp_path: Path, read_stream: Callable) -> None:
    writer = StreamWriter(tmp_path / "log" / STREAM)

    def config_event(seq: int) -> dict[str, Any]:
        return {"seq": seq, "ts": 1.5, "type": "config", "config": {"lr": seq}}

    assert writer.append_event(config_event(0))
    for wrong in (0, 2, -1):
        with pytest.raises(UsageError, match="not the next"):
            writer.append_event(config_event(wrong))
    assert writer.append_event(config_event(1))
    writer.close()
    assert [e["config"] for e in read_stream(tmp_path, STREAM).events] == [{"lr": 0}, {"lr": 1}]


def batch_of(first: int, pads: list[int]) -> list[dict[str, Any]]:
    return [
        {"seq": first + i, "ts": 1.5, "type": "metrics", "step": i, "data": {"pad": "x" * n}}
        for i, n in enumerate(pads)
    ]


@settings(deadline=None, max_examples=60)
@given(
    segment_bytes=st.integers(64, 4096),
    batches=st.lists(st.lists(st.integers(0, 300), max_size=8), min_size=1, max_size=12),
)
def test_append_events_keeps_seqs_gapless_and_batches_whole_across_roll_overs(
    segment_bytes: int, batches: list[list[int]], read_stream: Callable
) -> None:
    with tempfile.TemporaryDirectory() as root:
        stream_dir = Path(root, "log", STREAM)
        writer = StreamWriter(stream_dir, segment_bytes=segment_bytes)
        firsts = set()
        for pads in batches:
            firsts.add(writer.next_seq)
            assert writer.append_events(batch_of(writer.next_seq, pads)) == len(pads)
        total = writer.next_seq
        writer.close()
        assert total == sum(map(len, batches))
        seqs = read_stream(Path(root), STREAM).seqs
        assert seqs == list(range(total))
        for first in list_segments(stream_dir):
            data = (stream_dir / segment_name(first)).read_bytes()
            if not data and total == 0:
                continue  # a stream that never got an event has its first segment, empty
            events, used, bad = decode(data)
            assert (used, bad) == (len(data), []) and events[0]["seq"] == first
            assert first in firsts, "a batch was split between segments"
            if len(data) > segment_bytes:  # only one batch bigger than a segment
                assert {e["seq"] for e in events} <= set(range(first, first + 9))


def test_append_events_refuses_wrong_seqs_and_unencodable_events_writing_nothing(
    tmp_path: Path,
) -> None:
    writer = StreamWriter(tmp_path / "log" / STREAM)
    assert writer.append_events(batch_of(0, [1, 2])) == 2
    before = files_under(tmp_path)
    for wrong in (batch_of(1, [1, 1]), batch_of(2, [1]) + batch_of(4, [1]), batch_of(3, [1])):
        with pytest.raises(UsageError, match="not the next"):
            writer.append_events(wrong)
    unencodable = batch_of(2, [1, 1])
    unencodable[1]["data"]["bad"] = object()
    with pytest.raises(EncodeError):
        writer.append_events(unencodable)
    assert writer.append_events([]) == 0
    assert files_under(tmp_path) == before and writer.next_seq == 2
    writer.close()


@pytest.mark.parametrize(
    ("headroom", "cause"), [(600, "short write"), (0, "EFBIG")], ids=["short-write", "no-room"]
)
def test_a_batch_that_does_not_fit_on_disk_is_cut_back_whole_and_takes_no_seq(
    tmp_path: Path, spawn: Callable, read_stream: Callable, headroom: int, cause: str
) -> None:
    proc = spawn("batch-full", tmp_path, STREAM, headroom, stdout=subprocess.PIPE)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    outcome = json.loads(stdout)
    assert outcome == {"returned": [3, 0, 2], "dropped": {cause: 5}}
    assert assert_well_formed(tmp_path / "log" / STREAM, DEFAULT_SEGMENT_BYTES) == list(range(5))
    assert [e["step"] for e in read_stream(tmp_path, STREAM).events] == [0, 1, 2, 3, 4]


THREADS, PER_THREAD = 8, 250


def test_threads_logging_at_once_never_tear_lines_and_keep_seqs_gapless(
    tmp_path: Path, open_producer: Callable[..., Producer], read_stream: Callable
) -> None:
    producer = open_producer(segment_bytes=8192)
    start = threading.Barrier(THREADS)

    def train(thread: int) -> None:
        start.wait()
        for i in range(PER_THREAD):
            producer.log({"thread": thread, "i": i, "pad": "x" * ((thread * 37 + i) % 300)})

    workers = [threading.Thread(target=train, args=(t,)) for t in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    producer.close()
    assert_well_formed(tmp_path / "log" / producer.stream, 8192)
    drained = read_stream(tmp_path, producer.stream)
    assert drained.corrupt == []
    logged = [
        (e["data"]["thread"], e["data"]["i"]) for e in drained.events if e["type"] == "metrics"
    ]
    for thread in range(THREADS):
        assert [i for t, i in logged if t == thread] == list(range(PER_THREAD))
    assert len(logged) == THREADS * PER_THREAD


@pytest.fixture(params=["same-process", "subprocess"])
def held_stream(
    request: pytest.FixtureRequest, tmp_path: Path, spawn: Callable
) -> tuple[int, Callable[[], None]]:
    """A stream STREAM under tmp_path with 3 events and a live writer: (its pid, release)."""
    if request.param == "same-process":
        writer = StreamWriter(tmp_path / "log" / STREAM)
        for step in range(3):
            writer.append("metrics", {"step": step, "data": {}})
        return os.getpid(), writer.close
    proc = spawn("hold", tmp_path, STREAM, 3, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    pid = int(proc.stdout.readline())

    def release() -> None:
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0

    return pid, release


@pytest.mark.parametrize("second", ["writer", "init"])
def test_a_second_writer_is_refused_with_a_clear_message(
    tmp_path: Path, held_stream: tuple[int, Callable[[], None]], second: str
) -> None:
    pid, release = held_stream
    with pytest.raises(StreamLockedError) as caught:
        if second == "writer":
            StreamWriter(tmp_path / "log" / STREAM, resume=True)
        else:
            waddle.init(
                project="tests", root=tmp_path, id=STREAM, resume=True, system_metrics=False
            )
    message = str(caught.value)
    assert f"'{STREAM}'" in message and f"pid {pid}" in message
    assert "run id" in message
    release()
    writer = StreamWriter(tmp_path / "log" / STREAM, resume=True)
    assert writer.append("metrics", {"step": 3, "data": {}}) == 3
    writer.close()


@pytest.mark.parametrize("forked", [False, True], ids=["alone", "with-a-forked-child"])
def test_a_sigkilled_writer_leaves_no_stale_lock(
    tmp_path: Path, spawn: Callable, read_stream: Callable, forked: bool
) -> None:
    extra = ["fork"] if forked else []
    proc = spawn("hold", tmp_path, STREAM, 5, *extra, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    writer_pid, *children = map(int, proc.stdout.readline().split())
    try:
        os.kill(writer_pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        writer = StreamWriter(tmp_path / "log" / STREAM, resume=True)
        assert writer.append("metrics", {"step": 5, "data": {}}) == 5
        writer.close()
    finally:
        for child in children:
            os.kill(child, signal.SIGKILL)
    assert read_stream(tmp_path, STREAM).seqs == list(range(6))


def test_resume_cuts_a_torn_tail_and_continues_the_seq(
    tmp_path: Path, log_fixture, read_stream: Callable
) -> None:
    stream_dir = tmp_path / "log" / STREAM
    stream_dir.mkdir(parents=True)
    segment = stream_dir / segment_name(0)
    segment.write_bytes(log_fixture.data)
    writer = StreamWriter(stream_dir, resume=True)
    expected = 0 if log_fixture.last_seq is None else log_fixture.last_seq + 1
    assert writer.append("metrics", {"step": 99, "data": {}}) == expected
    writer.close()
    assert segment.read_bytes().startswith(log_fixture.complete)
    drained = read_stream(tmp_path, STREAM)
    assert drained.seqs == [*log_fixture.seqs, expected]
    assert [c.offset for c in drained.corrupt] == log_fixture.bad_offsets


@pytest.mark.parametrize(
    ("segment", "leftover"),
    [("next", b'{"seq":10,"ts":17'), ("next", b""), ("newest", b'{"seq":10,"ts":1')],
    ids=["torn-line-in-a-new-segment", "empty-new-segment", "torn-line-in-the-old-segment"],
)
def test_resume_after_a_crash_during_roll_over(
    tmp_path: Path, segment: str, leftover: bytes, read_stream: Callable
) -> None:
    stream_dir = tmp_path / "log" / STREAM
    writer = StreamWriter(stream_dir, segment_bytes=300)
    for step in range(10):
        writer.append("metrics", {"step": step, "data": {"pad": "x" * 40}})
    writer.close()
    first = 10 if segment == "next" else list_segments(stream_dir)[-1]
    with (stream_dir / segment_name(first)).open("ab") as handle:
        handle.write(leftover)
    writer = StreamWriter(stream_dir, resume=True, segment_bytes=300)
    assert writer.append("metrics", {"step": 10, "data": {}}) == 10
    writer.close()
    drained = read_stream(tmp_path, STREAM)
    assert (drained.seqs, drained.corrupt) == (list(range(11)), [])


@pytest.mark.parametrize(
    ("headroom", "cause", "finish_fits"),
    [(600, "short write", True), (0, "EFBIG", False)],
    ids=["short-writes", "no-room-at-all"],
)
def test_a_full_disk_drops_whole_events_and_training_goes_on(
    tmp_path: Path,
    spawn: Callable,
    read_stream: Callable,
    headroom: int,
    cause: str,
    finish_fits: bool,
) -> None:
    kept, failing = 20, 30
    proc = spawn(
        "disk-full",
        tmp_path,
        "full",
        kept,
        headroom,
        failing,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert_well_formed(tmp_path / "log" / "full", DEFAULT_SEGMENT_BYTES)
    drained = read_stream(tmp_path, "full")
    assert drained.corrupt == []
    attempted = 1 + kept + failing + 2  # run, metrics, then summary and finish
    lost = attempted - len(drained.events)
    assert [e["type"] for e in drained.events] == (
        ["run"] + ["metrics"] * kept + (["finish"] if finish_fits else [])
    )
    if finish_fits:
        assert drained.events[-1]["dropped"] == {cause: lost}
    assert f"dropped for stream full ({cause})" in stderr
    assert f"lost {lost} event(s)" in stderr


@pytest.mark.parametrize(
    ("after", "pad", "starts_again"),
    [(10, 10, False), (2000, 1000, True)],
    ids=["few-events-after", "megabytes-after"],
)
def test_a_vanished_log_folder_costs_events_never_an_exception(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    read_stream: Callable,
    after: int,
    pad: int,
    starts_again: bool,
) -> None:
    caplog.set_level("WARNING", logger="waddle")
    run = waddle.init(project="tests", root=tmp_path, id="gone", system_metrics=False)
    for step in range(10):
        run.log({"loss": 1.0 / (step + 1)})
    shutil.rmtree(tmp_path / "log")
    for step in range(after):
        assert run.log({"loss": float(step), "pad": "x" * pad}) is None
    run.finish()
    attempted = 1 + 10 + after + 2
    readable = read_stream(tmp_path, run.stream).events
    assert len(readable) + run.dropped == attempted
    assert "segment deleted" in caplog.text
    assert f"lost {run.dropped} event(s)" in caplog.text
    if starts_again:
        assert readable, "after megabytes of events the writer still had not noticed"
    if readable:
        first = readable[0]["seq"]
        assert [e["seq"] for e in readable] == list(range(first, first + len(readable)))
        assert readable[-1]["type"] == "finish"
        assert readable[-1]["dropped"]["segment deleted"] > 0


def test_writer_counts_events_written_into_a_deleted_segment(tmp_path: Path) -> None:
    writer = StreamWriter(tmp_path / "log" / STREAM)
    for step in range(5):
        writer.append("metrics", {"step": step, "data": {}})
    shutil.rmtree(tmp_path / "log")
    for step in range(5, 10):
        writer.append("metrics", {"step": step, "data": {}})
    writer.close()
    assert writer.dropped == {"segment deleted": 10}


def test_a_writer_whose_folder_vanished_never_writes_into_a_new_owners_stream(
    tmp_path: Path, read_stream: Callable
) -> None:
    stream_dir = tmp_path / "log" / STREAM
    old = StreamWriter(stream_dir)
    old.append("metrics", {"step": 0, "data": {"writer": "old"}})
    shutil.rmtree(tmp_path / "log")
    new = StreamWriter(stream_dir)
    new.append("metrics", {"step": 0, "data": {"writer": "new"}})
    for step in range(2000):
        old.append("metrics", {"step": step, "data": {"writer": "old", "pad": "x" * 1000}})
    new.append("metrics", {"step": 1, "data": {"writer": "new"}})
    old.close()
    new.close()
    drained = read_stream(tmp_path, STREAM)
    assert [(e["seq"], e["data"]["writer"]) for e in drained.events] == [(0, "new"), (1, "new")]


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_a_lock_that_cannot_be_taken_again_never_breaks_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = StreamWriter(tmp_path / "log" / STREAM)
    shutil.rmtree(tmp_path / "log")

    def out_of_descriptors(stream_dir: Path) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(writer_module, "acquire_lock", out_of_descriptors)
    for step in range(400):  # megabytes: the writer notices the folder is gone, tries again
        writer.append("metrics", {"step": step, "data": {"pad": "x" * 1000}})
    monkeypatch.undo()
    bystanders = [os.open(os.devnull, os.O_RDONLY) for _ in range(16)]
    try:
        writer.close()
        assert all(map(is_open, bystanders)), "close() closed a descriptor it did not own"
    finally:
        for fd in filter(is_open, bystanders):
            os.close(fd)


def test_append_after_close_writes_nothing(tmp_path: Path) -> None:
    writer = StreamWriter(tmp_path / "log" / STREAM)
    writer.append("metrics", {"step": 0, "data": {}})
    writer.close()
    before = files_under(tmp_path)
    with contextlib.suppress(WaddleError):
        writer.append("metrics", {"step": 1, "data": {}})
    assert files_under(tmp_path) == before


def steps_printed(path: Path) -> set[int]:
    """The steps a producer printed after their ``log()`` returned (complete lines only)."""
    return {int(line) for line in path.read_text().split("\n")[:-1]}


def wait_for_first_step(path: Path, proc: subprocess.Popen[str]) -> None:
    def logged() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        return path.stat().st_size > 0

    eventually(logged, 30, "the producer's first step")


@pytest.fixture
def check_fault_log(
    read_stream: Callable, payload: Callable, canonical: Callable
) -> Callable[[Path, set[int]], list[dict[str, Any]]]:
    """Checks that a killed-and-resumed run's log equals one nobody interrupted, and holds
    every step whose ``log()`` returned; gives the events back."""

    def check(root: Path, returned: set[int]) -> list[dict[str, Any]]:
        drained = read_stream(root, "fault")
        assert drained.corrupt == []
        assert drained.seqs == list(range(len(drained.seqs)))
        segments = (root / "log" / "fault").glob("*.ndjson")
        assert sum(p.read_bytes().count(b"\n") for p in segments) == len(drained.events)
        metrics = [e for e in drained.events if e["type"] == "metrics"]
        steps = [e["step"] for e in metrics]
        assert steps == list(range(len(steps)))
        assert returned <= set(steps), f"lost steps {sorted(returned - set(steps))[:10]}"
        assert canonical([e["data"] for e in metrics]) == canonical([payload(s) for s in steps])
        return drained.events

    return check


KILLS = 8


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_no_event_whose_log_returned(
    tmp_path: Path, spawn: Callable, check_fault_log: Callable
) -> None:
    seed = random.randrange(1 << 32)
    print(f"kill delays drawn with random.Random({seed})")
    rng = random.Random(seed)
    returned: set[int] = set()
    for attempt in range(KILLS + 1):
        last = attempt == KILLS
        out = tmp_path / f"steps-{attempt}.txt"
        with out.open("w") as sink:
            proc = spawn(
                "loop",
                tmp_path,
                "fault",
                16384,
                100 if last else -1,
                stdout=sink,
                stderr=subprocess.PIPE,
            )
        if last:
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
        else:
            wait_for_first_step(out, proc)
            time.sleep(rng.uniform(0, 0.15))
            proc.kill()
            assert proc.wait(timeout=30) == -signal.SIGKILL
        returned |= steps_printed(out)
        events = check_fault_log(tmp_path, returned)
    assert events[-1]["type"] == "finish"
    assert sum(e["type"] == "run" for e in events) == KILLS + 1


def test_duckdb_read_json_sees_what_log_reader_sees(
    tmp_path: Path, spawn: Callable, read_stream: Callable, canonical: Callable
) -> None:
    proc = spawn("loop", tmp_path, "duck", 4096, 300, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=60) == 0
    assert len(list_segments(tmp_path / "log" / "duck")) > 1
    segments = str(tmp_path / "log" / "duck" / "*.ndjson")
    rows = duckdb.sql(
        f"""
        SELECT seq, type, step,
            CAST(data->>'$.loss' AS DOUBLE), CAST(data->>'$.step_copy' AS BIGINT),
            CAST(data->>'$.even' AS BOOLEAN), CAST(data->>'$.grad.norm' AS DOUBLE),
            CAST(data->>'$.grad.max' AS DOUBLE), CAST(data->>'$.hist[1]' AS DOUBLE),
            data->>'$.tag'
        FROM read_json('{segments}', format = 'newline_delimited',
            columns = {{seq: 'UBIGINT', type: 'VARCHAR', step: 'BIGINT', data: 'JSON'}})
        ORDER BY seq
        """
    ).fetchall()
    [(auto_count,)] = duckdb.sql(
        f"SELECT count(*) FROM read_json('{segments}', format = 'newline_delimited', "
        "union_by_name = true)"
    ).fetchall()

    def as_row(event: dict[str, Any]) -> tuple[Any, ...]:
        data = event.get("data") if event["type"] == "metrics" else None
        values = (None,) * 7
        if data is not None:
            grad = data["grad"]
            values = (
                data["loss"],
                data["step_copy"],
                data["even"],
                grad["norm"],
                grad["max"],
                data["hist"][1],
                data["tag"],
            )
        return (event["seq"], event["type"], event.get("step"), *values)

    events = read_stream(tmp_path, "duck").events
    assert auto_count == len(rows) == len(events) == 300 + 3
    assert canonical(rows) == canonical([as_row(e) for e in events])

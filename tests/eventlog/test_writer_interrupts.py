"""Exceptions raised into the stream writer (waddle/eventlog/writer.py) mid-write.

Ctrl-C raises KeyboardInterrupt wherever the main thread is, between two bytecodes, and
so does any signal handler that raises. Whatever the moment, the log must stay sound:
each line on disk has its own seq, seqs have no gaps, and the next event takes the next
seq (a line left on disk with its seq still free would make the next event a duplicate,
which every reader drops: the final summary of a run stopped by Ctrl-C was lost so).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

import waddle
from waddle.eventlog import writer as writer_module
from waddle.eventlog.record import decode
from waddle.eventlog.segment import list_segments, segment_name
from waddle.eventlog.writer import StreamWriter

STREAM = "s"
SEGMENT_BYTES = 300


def config_event(seq: int) -> dict[str, Any]:
    return {"seq": seq, "ts": 1.5, "type": "config", "config": {"n": seq}}


# The call interrupted, on a writer that holds three small events: a plain append, one
# that rolls the segment over, and a batch.
CALLS: dict[str, Callable[[StreamWriter], object]] = {
    "append": lambda w: w.append("metrics", {"step": 3, "data": {"loss": 0.5}}),
    "roll-over": lambda w: w.append("metrics", {"step": 3, "data": {"pad": "x" * 200}}),
    "batch": lambda w: w.append_events([config_event(w.next_seq + i) for i in range(3)]),
}


def opened(root: Path) -> StreamWriter:
    writer = StreamWriter(root / "log" / STREAM, segment_bytes=SEGMENT_BYTES)
    for step in range(3):
        writer.append("metrics", {"step": step, "data": {"loss": 1.0}})
    return writer


# Where CPython hands a pending signal to Python code (the handler runs, and what it
# raises is raised there): on entry to a function, and when a call returns. A C call that
# has returned has done its work (os.write has written) even though the exception comes
# out of it.
_MOMENTS = {"call", "return", "c_return"}


def in_writer(filename: str) -> bool:
    return filename == writer_module.__file__


@contextmanager
def raising_at(
    moment: int | None, watched: Callable[[str], bool] = in_writer
) -> Iterator[list[int]]:
    """Raise KeyboardInterrupt at the ``moment``-th moment where code in a ``watched``
    file (the writer's by default) can receive a signal (None: only count the moments,
    into the list yielded). Python drops a profile function that raises: one exception."""
    seen = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event in _MOMENTS and watched(frame.f_code.co_filename):
            if seen[0] == moment:
                raise KeyboardInterrupt
            seen[0] += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def lines_on_disk(stream_dir: Path) -> list[int]:
    """The seqs of every line of every segment, in file order; each segment checked whole."""
    seqs: list[int] = []
    for first in list_segments(stream_dir):
        data = (stream_dir / segment_name(first)).read_bytes()
        events, used, bad = decode(data)
        assert (used, bad) == (len(data), []), f"segment {first} holds a torn or bad line"
        assert data.count(b"\n") == len(events)
        if events:
            assert events[0]["seq"] == first, f"segment {first} starts at {events[0]['seq']}"
        seqs += [event["seq"] for event in events]
    return seqs


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_exception_at_any_moment_of_a_write_keeps_seqs_unique_and_gapless(
    tmp_path: Path, call: str, read_stream: Callable
) -> None:
    writer = opened(tmp_path / "count")
    with raising_at(None) as counted:
        CALLS[call](writer)
    assert counted[0] > 10
    for moment in range(counted[0]):
        root = tmp_path / str(moment)
        writer = opened(root)
        with pytest.raises(KeyboardInterrupt), raising_at(moment):
            CALLS[call](writer)
        stream_dir = root / "log" / STREAM
        on_disk = lines_on_disk(stream_dir)
        assert on_disk == list(range(writer.next_seq)), f"interrupted at moment {moment}"
        assert writer.append("metrics", {"step": 9, "data": {"after": True}}) == len(on_disk)
        writer.close()
        drained = read_stream(root, STREAM)
        assert drained.corrupt == []
        assert drained.seqs == lines_on_disk(stream_dir) == list(range(len(on_disk) + 1))
        assert drained.events[-1]["data"] == {"after": True}


@pytest.mark.parametrize(
    "landed", [0, 10, None], ids=["before-the-write", "mid-line", "after-the-write"]
)
def test_ctrl_c_inside_log_keeps_the_final_summary_and_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_stream: Callable, landed: int | None
) -> None:
    run = waddle.init(project="tests", root=tmp_path, id="ctrl-c", system_metrics=False)
    run.log({"loss": 1.0})
    real_write = os.write
    segment = tmp_path / "log" / "ctrl-c" / segment_name(0)

    def write_then_interrupt(fd: int, data: bytes) -> int:
        """The kernel took ``landed`` bytes (all with None), then Ctrl-C came."""
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, data if landed is None else data[:landed])
        raise KeyboardInterrupt

    size = segment.stat().st_size
    monkeypatch.setattr(os, "write", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.log({"loss": 0.5})
    grew = segment.stat().st_size - size
    assert grew > 0 if landed is None else grew == 0
    run.finish(exit_code=130, status="killed")
    drained = read_stream(tmp_path, "ctrl-c")
    assert drained.corrupt == []
    assert drained.seqs == list(range(len(drained.events)))
    assert segment.read_bytes().count(b"\n") == len(drained.events)
    kinds = [event["type"] for event in drained.events]
    assert kinds == [
        "run",
        "metrics",
        *(["metrics"] if landed is None else []),
        "summary",
        "finish",
    ]
    assert drained.events[-2]["final"] is True
    assert drained.events[-1]["status"] == "killed"


ROUNDS = 12


def test_sigint_at_random_moments_leaves_a_readable_gapless_log(
    tmp_path: Path, spawn: Callable, read_stream: Callable
) -> None:
    seed = random.randrange(1 << 32)
    print(f"SIGINT delays drawn with random.Random({seed})")
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        proc = spawn("spin", tmp_path, "spin", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # "ready" comes once a first log() has returned: whenever the SIGINT lands, even
        # before the busy wait ends on a loaded machine, the run has a summary to write.
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        for _ in range(rng.randrange(1_000, 100_000)):  # a busy wait: no sleep granularity
            pass
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGINT, stderr
        assert "KeyboardInterrupt" in stderr
    stream_dir = tmp_path / "log" / "spin"
    on_disk = lines_on_disk(stream_dir)
    drained = read_stream(tmp_path, "spin")
    assert drained.corrupt == []
    assert on_disk == drained.seqs == list(range(len(on_disk)))
    kinds = [event["type"] for event in drained.events]
    assert kinds.count("run") == kinds.count("summary") == kinds.count("finish") == ROUNDS
    assert all(e["status"] == "killed" for e in drained.events if e["type"] == "finish")

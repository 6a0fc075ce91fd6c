"""``IngestLog``: idempotency, gaps, a write failing midway, eviction and closing."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import raw_events, raw_log
from waddle.errors import (
    IngestClosed,
    IngestError,
    LogUnavailable,
    SeqGap,
    StreamConflict,
    StreamLockedError,
    WriteFailed,
)
from waddle.eventlog import writer as writer_module
from waddle.eventlog.watch import Hints
from waddle.eventlog.writer import StreamWriter
from waddle.web import ingest_log
from waddle.web.errors import domain_answer
from waddle.web.ingest_log import DEFAULT_MAX_OPEN, MAX_OPEN_CEILING, IngestLog, Outcome

from .events import stream_events


def test_appends_skip_what_is_held_and_refuse_gaps(tmp_path: Path) -> None:
    log = IngestLog(tmp_path)
    events = stream_events("w1", 5)
    assert log.append("w1", events[:3]).seq == 2
    outcome = log.append("w1", events[1:5])
    assert (outcome.seq, outcome.written, outcome.duplicates) == (4, 2, 2)
    with pytest.raises(SeqGap) as gap:
        log.append("w1", events[6:])
    assert (gap.value.stream, gap.value.expected, gap.value.got) == ("w1", 5, 6)
    log.close()
    assert raw_events(raw_log(tmp_path, "w1")) == events[:5]


def test_a_closed_log_refuses_and_reopening_resumes(tmp_path: Path) -> None:
    events = stream_events("w2", 4)
    first = IngestLog(tmp_path)
    first.append("w2", events[:2])
    first.close()
    with pytest.raises(IngestClosed) as closed:
        first.append("w2", events[2:])
    assert closed.value.stream == "w2"
    second = IngestLog(tmp_path)
    assert second.held("w2") == 1
    assert second.append("w2", events).written == len(events) - 2
    second.close()


def test_least_recently_used_writers_are_closed(tmp_path: Path) -> None:
    log = IngestLog(tmp_path, max_open=2)
    for name in ("a1", "a2", "a3"):
        log.append(name, stream_events(name, 1, finish=False))
    assert list(log._writers) == ["a2", "a3"]
    assert log.append("a1", stream_events("a1", 3, finish=False)).seq == 3
    log.close()


class FailingWriter:
    """A writer whose disk fills after ``room`` events."""

    def __init__(self, room: int) -> None:
        self.next_seq = 0
        self.synced_seq = -1
        self.sync_failed = False
        self.room = room
        self.dropped: dict[str, int] = {}

    def append_events(self, events: list[dict[str, Any]], texts: list[bytes] | None) -> int:
        if len(events) > self.room:
            self.dropped["ENOSPC"] = self.dropped.get("ENOSPC", 0) + len(events)
            return 0
        self.room -= len(events)
        self.next_seq += len(events)
        return len(events)

    def sync(self) -> bool:
        self.synced_seq = self.next_seq - 1
        return True

    def close(self) -> None:
        pass


def test_a_failed_write_answers_503_with_the_highest_seq_held(tmp_path: Path) -> None:
    log = IngestLog(tmp_path)
    log._writers["w3"] = FailingWriter(room=3)  # type: ignore[assignment]
    events = stream_events("w3", 6)
    assert log.append("w3", events[:2]).seq == 1
    with pytest.raises(WriteFailed) as failed:
        log.append("w3", events)
    assert (failed.value.stream, failed.value.held, failed.value.causes) == ("w3", 1, "ENOSPC")


def test_the_same_stream_id_from_another_process_is_a_conflict_not_a_duplicate(
    tmp_path: Path,
) -> None:
    log = IngestLog(tmp_path)
    first = stream_events("shared-id", 3)
    log.append("shared-id", first)
    other_machine = [
        {**first[0], "context": {"host": "gpu-box-2", "pid": 7, "started_at": 1.0}},
        *stream_events("shared-id", 5)[1:],
    ]
    with pytest.raises(StreamConflict) as conflict:
        log.append("shared-id", other_machine)
    assert "gpu-box-2" in conflict.value.sent and "gpu-box-2" not in conflict.value.held
    assert log.append("shared-id", first).duplicates == len(first)  # a true resend is fine
    log.close()
    assert raw_events(raw_log(tmp_path, "shared-id")) == first


ANSWERS = [
    (SeqGap("s1", 5, 9), 409, {"error": "seq_gap", "stream": "s1", "expected": 5, "seq": 4}),
    (StreamConflict("s1", "run 'a'", "run 'b'"), 409, {"error": "stream_conflict", "stream": "s1"}),
    (StreamLockedError("one writer", stream="s1"), 409, {"error": "stream_locked", "stream": "s1"}),
    (
        WriteFailed("s1", 3, "ENOSPC"),
        503,
        {"error": "write_failed", "stream": "s1", "seq": 3, "written": 0},
    ),
    (LogUnavailable("s1", "EACCES"), 503, {"error": "log_unavailable"}),
    (IngestClosed("s1"), 503, {"error": "shutting_down"}),
]


@pytest.mark.parametrize(("exc", "status", "body"), ANSWERS)
def test_each_refusal_of_the_log_has_its_answer_in_the_web_layer(
    exc: IngestError | StreamLockedError, status: int, body: dict[str, Any]
) -> None:
    answer = domain_answer(exc)
    assert answer.status == status
    assert answer.body() == {"detail": str(exc), **body}
    assert list(answer.body())[:2] == ["error", "detail"]


def test_the_streams_it_writes_are_covered_and_hinted_until_finished(tmp_path: Path) -> None:
    """What lets the host's readers skip polling relayed streams: while a writer here
    is open nothing else grows its stream, and every write is told."""
    hints = Hints()
    queue = hints.subscribe()
    log = IngestLog(tmp_path, hints=hints)
    events = stream_events("h1", 3)
    log.append("h1", events[:2])
    assert hints.covered()[1] == {"h1"} and queue.take() == {"h1"}
    log.append("h1", events[:2])  # duplicates only: nothing grew
    assert queue.take() == set()
    log.append("h1", events[2:])  # ends with finish: the writer closes, the lock is free
    assert queue.take() == {"h1"} and hints.covered()[1] == frozenset()
    StreamWriter(tmp_path / "log" / "h1", resume=True).close()
    log.append("h2", stream_events("h2", 1, finish=False))
    log.close()
    assert hints.covered()[1] == frozenset()


def test_parts_are_written_each_on_its_own_and_made_durable_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    monkeypatch.setattr(ingest_log, "_SYNCFS", lambda fd: synced.append(fd) or 0)
    log = IngestLog(tmp_path)
    a, b = stream_events("p1", 2, finish=False), stream_events("p2", 2, finish=False)
    log.append("p1", a[:1])
    results = log.append_parts([("p1", a[2:], None), ("p2", b, None), ("p3", [], None)])
    assert isinstance(results[0], SeqGap)
    assert [(r.stream, r.written) for r in results[1:]] == [("p2", 3), ("p3", 0)]  # type: ignore[union-attr]
    assert len(synced) == 0  # one stream grew: its fsync is enough
    log.append_parts([("p1", a[:1], None), ("p2", b, None)])  # duplicates only
    assert len(synced) == 0
    log.append_parts([("p1", a, None), ("p4", stream_events("p4", 1), None)])
    assert len(synced) == 1  # two grew: one syncfs for both
    log.close()
    assert raw_events(raw_log(tmp_path, "p1")) == a


def test_a_failing_syncfs_falls_back_to_an_fsync_per_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_log, "_SYNCFS", lambda fd: -1)
    fsynced: list[str] = []
    real_sync = StreamWriter.sync
    monkeypatch.setattr(
        StreamWriter, "sync", lambda self: fsynced.append(self.stream_dir.name) or real_sync(self)
    )
    log = IngestLog(tmp_path)
    results = log.append_parts([(n, stream_events(n, 1, finish=False), None) for n in ("f1", "f2")])
    assert sorted(fsynced) == ["f1", "f2"]
    assert [(r.stream, r.written) for r in results] == [("f1", 2), ("f2", 2)]  # type: ignore[union-attr]
    log.close()


class BrokenDisk:
    """``os.fsync`` of the writers failing (EIO) for the streams in ``failing``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *failing: str) -> None:
        self.failing = set(failing)
        self.calls: list[str] = []
        self._fsync = writer_module.os.fsync
        monkeypatch.setattr(writer_module.os, "fsync", self)

    def __call__(self, fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).parent.name
        self.calls.append(name)
        if name in self.failing:
            raise OSError(errno.EIO, "Input/output error")
        self._fsync(fd)


def test_a_failed_fsync_refuses_the_stream_until_the_host_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Linux reports a writeback error once: a resend acknowledged after a later fsync
    succeeded could be lines the disk never got (fsyncgate)."""
    disk = BrokenDisk(monkeypatch)
    log = IngestLog(tmp_path)
    events = stream_events("eio", 5, finish=False)
    assert log.append("eio", events[:2]).seq == 1
    disk.failing.add("eio")
    with pytest.raises(WriteFailed) as failed:
        log.append("eio", events)
    assert (failed.value.stream, failed.value.held) == ("eio", 1)
    disk.failing.clear()  # fsync works again: it proves nothing about what it failed on
    calls = len(disk.calls)
    for _ in range(2):  # every resend, also one of the held and one of the new events
        with pytest.raises(WriteFailed) as failed:
            log.append("eio", [*events, *stream_events("eio", 7, finish=False)[6:]])
        assert (failed.value.stream, failed.value.held) == ("eio", 1)
    assert len(disk.calls) == calls  # and no fsync is trusted again
    assert log.append("other", stream_events("other", 1)).seq == 2  # other streams go on
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "eio" in r.getMessage()]
    assert len(errors) == 1 and "restart" in errors[0].getMessage()
    log.close()
    restarted = IngestLog(tmp_path)  # after the disk was checked: the log as it reads back
    assert restarted.append("eio", events) == Outcome("eio", 5, 0, 6)
    restarted.close()
    assert raw_events(raw_log(tmp_path, "eio")) == events


def test_a_failed_roll_over_fsync_refuses_the_stream_with_the_seq_synced_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = BrokenDisk(monkeypatch)
    log = IngestLog(tmp_path)
    events = stream_events("roll", 7, finish=False)
    log._writers["roll"] = StreamWriter(tmp_path / "log" / "roll", segment_bytes=600)
    assert log.append("roll", events[:3]).seq == 2
    disk.failing.add("roll")
    with pytest.raises(WriteFailed) as failed:
        log.append("roll", events)  # fills the segment, then rolls it over: that fsync fails
    assert failed.value.held == 2
    disk.failing.clear()
    with pytest.raises(WriteFailed) as failed:
        log.append("roll", events)
    assert failed.value.held == 2
    log.close()


def test_a_writer_never_trusts_an_fsync_after_one_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = BrokenDisk(monkeypatch)
    writer = StreamWriter(tmp_path / "s", segment_bytes=300)
    writer.append_events(stream_events("s", 1, finish=False))
    assert writer.sync() and writer.synced_seq == 1
    disk.failing.add("s")
    writer.append_events(stream_events("s", 2, finish=False)[2:])
    assert not writer.sync()
    disk.failing.clear()
    for _ in range(8):  # past a roll-over, whose fsync works
        writer.append("metrics", {"step": 1, "values": {"loss": 0.5}})
    assert len(list((tmp_path / "s").glob("*.ndjson"))) > 1
    assert not writer.sync() and writer.synced_seq == 1
    writer.close()


def test_a_failed_syncfs_fails_only_the_parts_whose_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_log, "_SYNCFS", lambda fd: -1)
    BrokenDisk(monkeypatch, "bad")
    log = IngestLog(tmp_path)
    good, bad = stream_events("good", 1, finish=False), stream_events("bad", 1, finish=False)
    ok, failed = log.append_parts([("good", good, None), ("bad", bad, None)])
    assert ok == Outcome("good", 1, 2, 0)
    assert isinstance(failed, WriteFailed)
    assert (failed.stream, failed.held) == ("bad", -1)
    log.close()


def test_syncfs_is_given_one_directory_open_since_the_log_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[int] = []
    monkeypatch.setattr(ingest_log, "_SYNCFS", lambda fd: given.append(fd) or 0)
    log = IngestLog(tmp_path)
    opened = os.fstat(log._dir_fd).st_ino  # type: ignore[arg-type]
    for names in (("d1", "d2"), ("d3", "d4")):
        log.append_parts([(n, stream_events(n, 1), None) for n in names])
    assert len(given) == 2 and len(set(given)) == 1
    # Still open between calls (a descriptor per call would be closed by now).
    assert os.fstat(given[0]).st_ino == opened == (tmp_path / "log").stat().st_ino
    log.close()


def test_a_resumed_stream_syncs_once_before_it_acknowledges_a_resend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = stream_events("back", 3, finish=False)
    writer = StreamWriter(tmp_path / "log" / "back")  # a host that wrote, then stopped
    writer.append_events(events)
    writer.close()
    disk = BrokenDisk(monkeypatch, "back")
    log = IngestLog(tmp_path)
    with pytest.raises(WriteFailed) as failed:
        log.append("back", events)  # a duplicate, but not known to be on disk
    assert failed.value.held == -1
    disk.failing.clear()
    with pytest.raises(WriteFailed) as failed:
        log.append("back", events)  # that fsync failed: none after it is trusted
    assert failed.value.held == -1
    assert disk.calls == ["back"]
    log.close()
    restarted = IngestLog(tmp_path)
    assert restarted.append("back", events) == Outcome("back", 3, 0, 4)  # synced once
    assert restarted.append("back", events[:2]).duplicates == 2
    assert disk.calls == ["back", "back", "back"]  # closing the failed writer, then once
    restarted.close()


@pytest.mark.parametrize(
    ("limit", "expected"), [(1024, DEFAULT_MAX_OPEN), (20_000, 6988), (10**9, MAX_OPEN_CEILING)]
)
def test_writers_kept_open_follow_the_open_files_limit(
    monkeypatch: pytest.MonkeyPatch, limit: int, expected: int
) -> None:
    monkeypatch.setattr(ingest_log.resource, "getrlimit", lambda kind: (limit, limit))
    assert IngestLog(Path("unused")).max_open == expected

"""``IngestLog``: idempotency, gaps, a write failing midway, eviction and closing."""

from __future__ import annotations

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
from waddle.web.errors import domain_answer
from waddle.web.ingest_log import IngestLog

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
        self.room = room
        self.dropped: dict[str, int] = {}

    def append_events(self, events: list[dict[str, Any]], texts: list[bytes] | None) -> int:
        if len(events) > self.room:
            self.dropped["ENOSPC"] = self.dropped.get("ENOSPC", 0) + len(events)
            return 0
        self.room -= len(events)
        self.next_seq += len(events)
        return len(events)

    def sync(self) -> None:
        pass

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

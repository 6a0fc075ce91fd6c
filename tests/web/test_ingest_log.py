"""``IngestLog``: idempotency, gaps, a write failing midway, eviction and closing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import raw_events, raw_log
from waddle.web.errors import RequestError
from waddle.web.ingest_log import IngestLog

from .events import stream_events


def test_appends_skip_what_is_held_and_refuse_gaps(tmp_path: Path) -> None:
    log = IngestLog(tmp_path)
    events = stream_events("w1", 5)
    assert log.append("w1", events[:3]).seq == 2
    outcome = log.append("w1", events[1:5])
    assert (outcome.seq, outcome.written, outcome.duplicates) == (4, 2, 2)
    with pytest.raises(RequestError) as gap:
        log.append("w1", events[6:])
    assert gap.value.status == 409 and gap.value.extra["expected"] == 5
    log.close()
    assert raw_events(raw_log(tmp_path, "w1")) == events[:5]


def test_a_closed_log_refuses_and_reopening_resumes(tmp_path: Path) -> None:
    events = stream_events("w2", 4)
    first = IngestLog(tmp_path)
    first.append("w2", events[:2])
    first.close()
    with pytest.raises(RequestError) as closed:
        first.append("w2", events[2:])
    assert closed.value.status == 503
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


def test_a_failed_write_answers_503_with_the_highest_seq_held(tmp_path: Path) -> None:
    log = IngestLog(tmp_path)
    log._writers["w3"] = FailingWriter(room=3)  # type: ignore[assignment]
    events = stream_events("w3", 6)
    assert log.append("w3", events[:2]).seq == 1
    with pytest.raises(RequestError) as failed:
        log.append("w3", events)
    error = failed.value
    assert error.status == 503 and error.error == "write_failed"
    assert error.extra["seq"] == 1 and error.extra["written"] == 0
    assert "ENOSPC" in error.detail


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
    with pytest.raises(RequestError) as conflict:
        log.append("shared-id", other_machine)
    assert conflict.value.status == 409 and conflict.value.error == "stream_conflict"
    assert "gpu-box-2" in str(conflict.value)
    assert log.append("shared-id", first).duplicates == len(first)  # a true resend is fine
    log.close()
    assert raw_events(raw_log(tmp_path, "shared-id")) == first

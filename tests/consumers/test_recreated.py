"""A stream deleted and created again under the same id: reported once, then followed.

The reader reports that the log no longer reaches a consumer's offset and reads the
stream from its start; the consumer's position follows it (its last seq stays), so the
next rounds neither report again nor read the stream from the start again.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.logs import stream_of, write_run
from waddle.consumers.base import run_consumer
from waddle.consumers.memory import MemoryConsumer
from waddle.eventlog.reader import LogReader
from waddle.eventlog.segment import log_dir


def wide(step: int) -> dict[str, Any]:
    return {"text": "x" * 400}


def recreate(root: Path, steps: int) -> None:
    shutil.rmtree(log_dir(root) / stream_of("abc"))
    write_run(root, "abc", steps)  # lines far shorter than before: the file is too


def test_a_recreated_stream_is_reported_once_and_then_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "w"
    write_run(root, "abc", 10, payload=wide)  # seqs 0..12
    consumer = MemoryConsumer()
    run_consumer(consumer, root, threading.Event(), once=True)
    assert len(consumer.store.events["abc"]) == 13
    recreate(root, 20)  # seqs 0..22: only 13..22 are above what was taken
    with caplog.at_level(logging.WARNING, logger="waddle.eventlog"):
        offsets = run_consumer(consumer, root, threading.Event(), once=True)
        again = run_consumer(consumer, root, threading.Event(), once=True)
    reports = [r for r in caplog.records if "no longer reaches" in r.getMessage()]
    assert len(reports) == 1
    assert offsets == again
    taken = [event["seq"] for event in consumer.store.events["abc"]]
    assert taken == list(range(23))
    assert offsets["abc"].seq == 22
    follow_up = LogReader(root).read("abc", offsets["abc"])
    assert not follow_up.restarted and not follow_up.events and not follow_up.corrupt

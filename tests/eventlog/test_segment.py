"""Segment files (waddle/eventlog/segment.py): names, listing, the one-writer lock, tail
repair, the descriptors a tailing reader keeps."""

from __future__ import annotations

import os
import random
import resource
from pathlib import Path

import pytest

from waddle.errors import StreamLockedError
from waddle.eventlog.segment import (
    LOCK_NAME,
    TAILING_READERS,
    OpenSegments,
    acquire_lock,
    list_segments,
    repair_tail,
    segment_name,
)
from waddle.web.ingest_log import FD_RESERVE, default_max_open


@pytest.mark.parametrize(
    ("seq", "name"),
    [
        (0, "00000000000000000000.ndjson"),
        (41873, "00000000000000041873.ndjson"),
        (2**64 - 1, "18446744073709551615.ndjson"),
    ],
)
def test_segments_are_named_by_their_first_seq_in_20_digits(seq: int, name: str) -> None:
    assert segment_name(seq) == name


def test_list_segments_is_numeric_order_and_empty_for_a_missing_folder(tmp_path: Path) -> None:
    assert list_segments(tmp_path / "missing") == []
    firsts = [0, 9, 10, 99, 100, 12345678901234567890]
    for first in random.sample(firsts, len(firsts)):
        (tmp_path / segment_name(first)).touch()
    assert list_segments(tmp_path) == firsts


@pytest.mark.parametrize(
    "stray",
    [
        LOCK_NAME,
        "notes.txt",
        "7.ndjson",
        "00000000000000000007.ndjson.tmp",
        "0000000000000000000x.ndjson",
        "0000000000000000000\u00b2.ndjson",
        "\uff10" * 19 + "\uff17.ndjson",
    ],
    ids=["lock", "text", "short", "tmp", "letter", "superscript-digit", "fullwidth-digits"],
)
def test_list_segments_ignores_files_that_are_not_segments(tmp_path: Path, stray: str) -> None:
    for first in (0, 7):
        (tmp_path / segment_name(first)).touch()
    (tmp_path / stray).touch()
    assert list_segments(tmp_path) == [0, 7]


def test_lock_is_exclusive_names_the_holder_and_is_released_with_its_descriptor(
    tmp_path: Path,
) -> None:
    stream_dir = tmp_path / "run-1"
    stream_dir.mkdir()
    fd = acquire_lock(stream_dir)
    assert (stream_dir / LOCK_NAME).read_text() == str(os.getpid())
    with pytest.raises(StreamLockedError) as caught:
        acquire_lock(stream_dir)
    assert "'run-1'" in str(caught.value)
    assert f"pid {os.getpid()}" in str(caught.value)
    os.close(fd)
    os.close(acquire_lock(stream_dir))


def test_repair_tail_cuts_only_a_torn_final_line(tmp_path: Path, log_fixture) -> None:
    path = tmp_path / segment_name(0)
    path.write_bytes(log_fixture.data)
    assert repair_tail(path) == log_fixture.last_seq
    assert path.read_bytes() == log_fixture.complete


@pytest.mark.parametrize(
    ("data", "last", "kept"),
    [
        (b'{"seq":0,"ts":1,"type":"metr', None, b""),
        (b'{"seq":4}\n{"seq":5,"ts":\n', 4, b'{"seq":4}\n{"seq":5,"ts":\n'),
        (b'{"seq":4}\n[5]\n"six"\n', 4, b'{"seq":4}\n[5]\n"six"\n'),
    ],
    ids=["only-a-torn-line", "corrupt-last-line", "last-lines-not-objects"],
)
def test_repair_tail_finds_the_last_seq_behind_bad_lines(
    tmp_path: Path, data: bytes, last: int | None, kept: bytes
) -> None:
    path = tmp_path / segment_name(0)
    path.write_bytes(data)
    assert repair_tail(path) == last
    assert path.read_bytes() == kept


@pytest.mark.parametrize("soft", [2048, 4096, 8192, 16384, 20000, 32768, 41984, 65536])
def test_writers_and_tailing_readers_share_one_descriptor_budget(
    monkeypatch: pytest.MonkeyPatch, soft: int
) -> None:
    """A host's stream writers (two descriptors each) and its tailing readers' kept
    segments come out of one limit, leaving the reserve for sockets and the database:
    each pool sized against the whole limit filled it past EMFILE at 10,000 live runs.
    (Below 2048 the writers' floor of ``DEFAULT_MAX_OPEN`` alone exceeds the limit; a
    host raises its limit to the hard one at start.)"""
    monkeypatch.setattr(resource, "getrlimit", lambda which: (soft, 1 << 20))
    readers = TAILING_READERS * OpenSegments().limit
    assert readers > 0
    assert 2 * default_max_open() + readers + FD_RESERVE <= soft

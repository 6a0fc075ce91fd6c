"""Lag: events and bytes a consumer has still to take from each stream."""

from __future__ import annotations

from pathlib import Path

from tests.consumers.logs import read_all, segments, write_run
from waddle.consumers.lag import Lag, bytes_behind, lag, last_seq, segment_sizes
from waddle.eventlog.reader import Offset
from waddle.eventlog.segment import log_dir


def test_lag_from_the_start_and_from_an_offset(tmp_path: Path) -> None:
    write_run(tmp_path, "a", 300, segment_bytes=2048)
    total = sum(p.stat().st_size for p in segments(tmp_path, "a"))
    assert lag(tmp_path, {}) == {"a": Lag(303, total)}
    middle = read_all(tmp_path, "a")[5].offset
    behind = lag(tmp_path, {"a": middle})["a"]
    assert behind.events == 302 - middle.seq
    assert behind.bytes == bytes_behind(segment_sizes(log_dir(tmp_path) / "a"), middle)
    assert lag(tmp_path, {"a": read_all(tmp_path, "a")[-1].offset}) == {"a": Lag(0, 0)}


def test_last_seq_skips_a_torn_or_corrupt_tail(tmp_path: Path) -> None:
    write_run(tmp_path, "a", 10)
    (path,) = segments(tmp_path, "a")
    with open(path, "ab") as handle:
        handle.write(b"{not json\n" + b'{"seq": 99, "ts"')
    assert last_seq(log_dir(tmp_path) / "a") == 12
    assert last_seq(log_dir(tmp_path) / "missing") == -1


def test_last_seq_reads_back_over_long_lines(tmp_path: Path) -> None:
    write_run(tmp_path, "a", 3, payload=lambda step: {"blob": "x" * 200_000, "v": step})
    assert last_seq(log_dir(tmp_path) / "a") == 5


def test_bytes_behind_an_offset_in_a_deleted_segment() -> None:
    assert bytes_behind({10: 100, 20: 50}, Offset(5, 30, 4)) == 150
    assert bytes_behind({10: 100, 20: 50}, Offset(10, 30, 12)) == 120

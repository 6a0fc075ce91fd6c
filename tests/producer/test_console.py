"""Console capture: text reaches the terminal unchanged and is recorded line by line."""

from __future__ import annotations

import sys

import pytest

import waddle
from tests.helpers import of_type, read_events


def captured(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["stream"], e["text"]) for e in of_type(events, "console")]


def test_lines_are_recorded_per_stream_and_still_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = waddle.Settings(silent=True)  # no finish line: stderr holds only the script's
    run = waddle.init(project="c", console=True, system_metrics=False, settings=settings)
    print("epoch 1")
    print("two\nlines", end="")
    sys.stderr.write("a warning\n")
    run.finish()
    print("after finish")
    out, err = capsys.readouterr()
    assert out == "epoch 1\ntwo\nlinesafter finish\n"
    assert err == "a warning\n"
    assert captured(read_events()) == [
        ("stdout", "epoch 1\n"),
        ("stdout", "two\n"),
        ("stderr", "a warning\n"),
        ("stdout", "lines"),
    ]


def test_carriage_returns_end_a_record_so_progress_bars_show_as_they_redraw() -> None:
    run = waddle.init(project="c", console=True, system_metrics=False)
    sys.stdout.write(" 10%\r")
    sys.stdout.write(" 20%")
    sys.stdout.write("\r 30%\r")
    run.finish()
    assert captured(read_events()) == [("stdout", " 10%\r"), ("stdout", " 20%\r 30%\r")]


def test_streams_are_restored_at_finish_and_nothing_is_captured_by_default() -> None:
    before = (sys.stdout, sys.stderr)
    run = waddle.init(project="c", console=True, system_metrics=False)
    assert sys.stdout is not before[0]
    run.finish()
    assert (sys.stdout, sys.stderr) == before
    quiet = waddle.init(project="c", id="quiet", system_metrics=False)
    print("not recorded")
    quiet.finish()
    assert captured(read_events(stream="quiet")) == []

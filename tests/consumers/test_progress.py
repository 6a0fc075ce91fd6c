"""Catch-up progress: a bar on a terminal, log lines otherwise, nothing for small backlogs."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from tests.consumers.logs import read_all, write_run
from waddle.consumers.progress import CatchUpProgress


def feed(progress: CatchUpProgress, root: Path) -> None:
    progress.begin("duckdb", {})
    for batch in read_all(root, "a"):
        progress.advance("duckdb", [batch])


def test_a_bar_on_a_terminal(tmp_path: Path) -> None:
    write_run(tmp_path, "a", 2000, segment_bytes=16384)
    out = io.StringIO()
    progress = CatchUpProgress(tmp_path, out=out, tty=True, min_bytes=1)
    feed(progress, tmp_path)
    progress.close()
    text = out.getvalue()
    assert text.startswith("\rcatching up [") and text.endswith("\n")
    assert "100%" in text.splitlines()[-1]
    assert progress.done == progress.total


def test_log_lines_otherwise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_run(tmp_path, "a", 500, segment_bytes=4096)
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="waddle.consumers"):
        feed(CatchUpProgress(tmp_path, out=out, tty=False, min_bytes=1), tmp_path)
    assert out.getvalue() == ""
    assert "catching up" in caplog.text and "caught up:" in caplog.text


def test_nothing_for_a_small_backlog(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_run(tmp_path, "a", 10)
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="waddle.consumers"):
        progress = CatchUpProgress(tmp_path, out=out, tty=True)
        feed(progress, tmp_path)
        progress.close()
    assert out.getvalue() == "" and caplog.text == ""

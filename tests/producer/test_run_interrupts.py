"""The summary holds what the log holds, whatever interrupts ``log()``.

Ctrl-C raises KeyboardInterrupt between any two bytecodes of the main thread; the writer
keeps the log gapless whatever the moment (``tests/eventlog/test_writer_interrupts.py``).
Here the same moments, across every module ``log()`` runs through, must also leave the
run's summary as the log is: one value behind (the write done, the fold not) was the
bug, and a fold by a ``define_metric`` rule counted twice would be one too.
"""

from __future__ import annotations

import errno
import os
import statistics
from pathlib import Path
from typing import Any

import pytest

import waddle
from tests.eventlog.test_writer_interrupts import raising_at
from tests.helpers import of_type, read_events

PACKAGE = str(Path(waddle.__file__).parent)
STREAM = "r"
# Values exact in binary, so that a mean is the same however it is summed.
STEPS = [{"loss": 1.5, "acc": 0.25, "lr": 0.5}, {"loss": 0.5, "acc": 0.75, "lr": 0.25}]
LAST = {"loss": 2.5, "acc": 0.5, "lr": 0.125}
RULES = {"loss": "mean", "acc": "max"}


def summary_of(logged: list[dict[str, Any]], rules: dict[str, str]) -> dict[str, Any]:
    """The summary ``logged`` makes under ``rules``, computed apart from the Run's code."""
    keys = {key for data in logged for key in data}
    folds = {"mean": statistics.fmean, "max": max, "last": lambda values: values[-1]}
    return {
        key: folds[rules.get(key, "last")]([data[key] for data in logged if key in data])
        for key in keys
    }


def started(root: Path, rules: dict[str, str]) -> waddle.Run:
    run = waddle.init(project="tests", root=root, id=STREAM, system_metrics=False)
    for metric, summary in rules.items():
        run.define_metric(metric, summary=summary)
    for data in STEPS:
        run.log(data)
    return run


def assert_summary_is_the_log(root: Path, run: waddle.Run, rules: dict[str, str]) -> None:
    expected = summary_of([e["data"] for e in of_type(read_events(root), "metrics")], rules)
    assert dict(run.summary) == expected
    run.finish(exit_code=130, status="killed")
    events = read_events(root)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[-2]["final"] is True
    assert events[-2]["summary"] == expected


@pytest.mark.parametrize("rules", [{}, RULES], ids=["last-values", "define-metric-rules"])
def test_ctrl_c_at_any_moment_of_log_leaves_the_summary_as_the_log_is(
    tmp_path: Path, rules: dict[str, str]
) -> None:
    def in_waddle(filename: str) -> bool:
        return filename.startswith(PACKAGE)

    run = started(tmp_path / "count", rules)
    with raising_at(None, in_waddle) as counted:
        run.log(LAST)
    run.finish()
    assert counted[0] > 10
    written = 0
    for moment in range(counted[0]):
        root = tmp_path / str(moment)
        run = started(root, rules)
        with pytest.raises(KeyboardInterrupt), raising_at(moment, in_waddle):
            run.log(LAST)
        written += len(of_type(read_events(root), "metrics")) > len(STEPS)
        assert_summary_is_the_log(root, run, rules)
    assert 0 < written < counted[0]  # moments both before and after the line landed


@pytest.mark.parametrize("rules", [{}, RULES], ids=["last-values", "define-metric-rules"])
def test_values_dropped_for_io_trouble_stay_out_of_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules: dict[str, str]
) -> None:
    run = started(tmp_path, rules)

    def disk_full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as patched:
        patched.setattr(os, "write", disk_full)
        run.log(LAST)
    assert run.dropped == 1
    assert_summary_is_the_log(tmp_path, run, rules)

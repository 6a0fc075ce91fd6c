"""Resuming a run: seq, step, config and summary continue; a crash leaves a torn tail
(cut first) and no stale lock; misuse raises UsageError."""

from __future__ import annotations

import signal

import pytest

import waddle
from tests.helpers import (
    assert_gapless,
    child_env,
    ending,
    finish_child,
    of_type,
    raw_events,
    raw_log,
    read_events,
    start_script,
    waddle_dir,
    wait_for_line,
)
from waddle.errors import StreamLockedError, UsageError
from waddle.eventlog.segment import list_segments, segment_name


def first_run() -> None:
    run = waddle.init(id="res", config={"lr": 0.1, "layers": 3}, system_metrics=False)
    for step in range(4):
        run.log({"loss": 1.0 / (step + 1)})
    run.config.wd = 0.01
    run.finish()


def test_resume_continues_seq_step_and_config() -> None:
    first_run()
    before = read_events()
    run = waddle.init(id="res", resume=True, config={"lr": 0.2}, system_metrics=False)
    assert dict(run.config) == {"lr": 0.2, "layers": 3, "wd": 0.01}
    assert run.step == 4
    assert run.summary["loss"] == 0.25
    run.log({"loss": 0.1})
    run.finish()
    events = read_events()
    assert_gapless(events)
    assert events[: len(before)] == before
    resumed = events[len(before)]
    assert (resumed["type"], resumed["resumed"], resumed["run_id"]) == ("run", True, "res")
    assert resumed["config"] == {"lr": 0.2, "layers": 3, "wd": 0.01}
    assert [(e["step"], e["data"]) for e in of_type(events, "metrics")][-1] == (4, {"loss": 0.1})
    assert ending(events) == ("finished", None)


def test_resume_keeps_explicit_summary_values() -> None:
    run = waddle.init(id="res", system_metrics=False)
    run.log({"loss": 1.0})
    run.summary["loss"] = 0.1  # an explicit set wins over logged values
    run.summary["best_epoch"] = 7
    run.finish()
    run = waddle.init(id="res", resume=True, system_metrics=False)
    assert dict(run.summary) == {"loss": 0.1, "best_epoch": 7}
    run.finish()
    assert of_type(read_events(), "summary")[-1]["summary"] == {"loss": 0.1, "best_epoch": 7}


@pytest.mark.parametrize("resume", [True, "allow", "auto"])
def test_resume_of_a_missing_run_starts_it(resume: object) -> None:
    run = waddle.init(id="fresh", resume=resume, system_metrics=False)
    run.finish()
    events = read_events()
    assert (events[0]["seq"], events[0]["resumed"]) == (0, False)


def test_resume_must_on_a_missing_run_raises_and_writes_nothing() -> None:
    with pytest.raises(UsageError, match="must"):
        waddle.init(id="ghost", resume="must", system_metrics=False)
    assert not waddle_dir().exists()


def test_resume_must_on_an_existing_run_resumes() -> None:
    first_run()
    waddle.init(id="res", resume="must", system_metrics=False).finish()
    assert [e["resumed"] for e in of_type(read_events(), "run")] == [False, True]


@pytest.mark.parametrize("resume", [None, False, "never"])
def test_reusing_an_id_without_resume_raises_and_changes_nothing(resume: object) -> None:
    first_run()
    before = raw_log()
    with pytest.raises(UsageError, match="resume"):
        waddle.init(id="res", resume=resume, system_metrics=False)
    assert raw_log() == before
    waddle.init(id="res", resume=True, system_metrics=False).finish()  # the lock was released


def test_a_killed_producer_leaves_a_torn_tail_that_resume_cuts_and_no_stale_lock() -> None:
    proc = start_script("lifecycle.py", "hang", env=child_env(WADDLE_RUN_ID="crash"))
    wait_for_line(proc, "ready")
    with pytest.raises(StreamLockedError):
        waddle.init(id="crash", resume=True, system_metrics=False)
    proc.send_signal(signal.SIGKILL)
    rc, _, _ = finish_child(proc)
    assert rc == -signal.SIGKILL
    complete = read_events()
    assert [e["type"] for e in complete][-1] == "summary"  # no finish: it was killed
    stream_dir = waddle_dir() / "log" / "crash"
    active = stream_dir / segment_name(list_segments(stream_dir)[-1])
    clean = active.read_bytes()
    with active.open("ab") as handle:  # what a write cut short by the kill leaves
        handle.write(b'{"seq":%d,"ts":1.0,"type":"metrics","step":5,"da' % len(complete))

    run = waddle.init(id="crash", resume=True, system_metrics=False)
    after = active.read_bytes()
    assert after.startswith(clean + b'{"seq":%d,' % len(complete))  # torn bytes gone
    assert (run.step, run.config.lr, run.config.layers) == (5, 0.1, 3)
    run.log({"loss": 0.01})
    run.finish()
    events = read_events()
    assert_gapless(events)
    assert raw_events(raw_log()) == events  # every line complete and parseable
    assert events[: len(complete)] == complete
    assert events[len(complete)]["type"] == "run"
    assert events[len(complete)]["resumed"] is True
    assert of_type(events, "metrics")[-1]["step"] == 5
    assert ending(events) == ("finished", None)

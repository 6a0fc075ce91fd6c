"""Run: the step rules, summary, finish, the context manager, misuse and I/O trouble."""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

import waddle
from tests.helpers import (
    assert_gapless,
    ending,
    of_type,
    read_events,
    waddle_dir,
)
from waddle.errors import EncodeError, UsageError


def new_run(**kwargs: Any) -> waddle.Run:
    return waddle.init(id="r", system_metrics=False, **kwargs)


def metrics(events: list[dict[str, Any]] | None = None) -> list[tuple[int, dict[str, Any]]]:
    return [(e["step"], e["data"]) for e in of_type(events or read_events(), "metrics")]


# --- step rules ---------------------------------------------------------------------------

# Each case: the log() calls as (data, kwargs), the (step, data) events they must write,
# and the run's current step afterwards.
STEP_CASES = {
    "auto-increment per committed call": (
        [({"a": 1}, {}), ({"a": 2}, {}), ({"b": 3}, {})],
        [(0, {"a": 1}), (1, {"a": 2}), (2, {"b": 3})],
        3,
    ),
    "commit=False gathers into the current step": (
        [
            ({"a": 1}, {"commit": False}),
            ({"b": 2}, {"commit": False}),
            ({"c": 3}, {}),
            ({"d": 4}, {}),
        ],
        [(0, {"a": 1, "b": 2, "c": 3}), (1, {"d": 4})],
        2,
    ),
    "a later gathered value for the same key wins": (
        [({"a": 1}, {"commit": False}), ({"a": 2}, {})],
        [(0, {"a": 2})],
        1,
    ),
    "explicit step moves the current step past it": (
        [({"a": 1}, {"step": 5}), ({"a": 2}, {})],
        [(5, {"a": 1}), (6, {"a": 2})],
        7,
    ),
    "a step below the current one is recorded, not dropped": (
        [
            ({"a": 0}, {}),
            ({"a": 1}, {}),
            ({"a": 2}, {}),
            ({"late": 9}, {"step": 1}),
            ({"a": 3}, {}),
        ],
        [(0, {"a": 0}), (1, {"a": 1}), (2, {"a": 2}), (1, {"late": 9}), (3, {"a": 3})],
        4,
    ),
    "repeating the current explicit step writes two events at it": (
        [({"a": 1}, {"step": 2}), ({"b": 1}, {"step": 2})],
        [(2, {"a": 1}), (2, {"b": 1})],
        3,
    ),
    "gathered values flush when a committed call names another step": (
        [({"a": 1}, {"commit": False}), ({"b": 2}, {"step": 3})],
        [(0, {"a": 1}), (3, {"b": 2})],
        4,
    ),
    "gathering at an explicit step, committed at the same step": (
        [({"a": 1}, {"step": 4, "commit": False}), ({"b": 2}, {"step": 4}), ({"c": 3}, {})],
        [(4, {"a": 1, "b": 2}), (5, {"c": 3})],
        6,
    ),
    "gathering at an explicit step, committed without a step": (
        [({"a": 1}, {"step": 4, "commit": False}), ({"b": 2}, {})],
        [(4, {"a": 1, "b": 2})],
        5,
    ),
    "gathering at a lower step flushes at the next committed call": (
        [
            ({"a": 0}, {}),
            ({"a": 1}, {}),
            ({"old": 1}, {"step": 0, "commit": False}),
            ({"a": 2}, {}),
        ],
        [(0, {"a": 0}), (1, {"a": 1}), (0, {"old": 1}), (2, {"a": 2})],
        3,
    ),
}


@pytest.mark.parametrize(("calls", "expected", "next_step"), STEP_CASES.values(), ids=STEP_CASES)
def test_step_rules(calls: list, expected: list, next_step: int) -> None:
    run = new_run()
    for data, kwargs in calls:
        run.log(data, **kwargs)
    assert run.step == next_step
    run.finish()
    events = read_events()
    assert metrics(events) == expected
    assert_gapless(events)


def test_gathered_values_are_written_at_finish() -> None:
    run = new_run()
    run.log({"a": 1})
    run.log({"b": 2}, commit=False)
    run.finish()
    events = read_events()
    assert metrics(events) == [(0, {"a": 1}), (1, {"b": 2})]
    assert events[-2]["summary"] == {"a": 1, "b": 2}


def test_seq_is_the_transport_order_independent_of_step() -> None:
    run = new_run()
    run.log({"a": 1}, step=100)
    run.log({"a": 2}, step=3)
    run.log({"a": 3})
    run.finish()
    events = read_events()
    assert_gapless(events)
    assert [(e["seq"], e["step"]) for e in of_type(events, "metrics")] == [
        (1, 100),
        (2, 3),
        (3, 101),
    ]


def test_threads_sharing_a_run_get_distinct_steps_and_gapless_seqs() -> None:
    run = new_run()
    per_thread = 300

    def work(name: str) -> None:
        for i in range(per_thread):
            run.log({name: i})

    threads = [threading.Thread(target=work, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.finish()
    events = read_events()
    assert_gapless(events)
    logged = metrics(events)
    assert sorted(step for step, _ in logged) == list(range(4 * per_thread))
    for n in range(4):
        values = [data[f"t{n}"] for _, data in logged if f"t{n}" in data]
        assert values == list(range(per_thread))


@pytest.mark.parametrize("step", [-1, 1.0, "3", True, 2**63])
def test_a_bad_step_is_refused_and_nothing_is_written(step: object) -> None:
    run = new_run()
    with pytest.raises(UsageError, match="step"):
        run.log({"a": 1}, step=step)  # type: ignore[arg-type]
    assert run.step == 0
    run.finish()
    assert metrics() == []


@pytest.mark.parametrize("data", [[("a", 1)], "loss", 3.5, None])
def test_log_takes_only_mappings(data: object) -> None:
    run = new_run()
    with pytest.raises(UsageError, match="dict"):
        run.log(data)  # type: ignore[arg-type]
    run.log(MappingProxyType({"a": 1}))
    run.finish()
    assert metrics() == [(0, {"a": 1})]


def test_non_finite_numpy_and_nested_values_round_trip() -> None:
    run = new_run()
    run.log(
        {
            "nan": math.nan,
            "inf": math.inf,
            "ninf": -math.inf,
            "f32": np.float32(0.5),
            "i64": np.int64(7),
            "scalar": np.array(2.5),
            "nested": {"x": [1, 2]},
        }
    )
    run.finish()
    ((step, data),) = metrics()
    assert step == 0
    assert math.isnan(data.pop("nan"))
    assert data == {
        "inf": math.inf,
        "ninf": -math.inf,
        "f32": 0.5,
        "i64": 7,
        "scalar": 2.5,
        "nested": {"x": [1, 2]},
    }


# --- unencodable values: raise at the call, write nothing -------------------------------


def test_an_unencodable_value_raises_naming_the_key_and_writes_nothing() -> None:
    run = new_run()
    run.log({"ok": 1})
    with pytest.raises(EncodeError, match="bad") as caught:
        run.log({"fine": 2, "bad": object()})
    assert caught.value.key.endswith("bad")
    with pytest.raises(EncodeError):
        run.log({3: "non-string key"})  # type: ignore[dict-item]
    assert run.step == 1
    run.log({"ok": 2})
    run.finish()
    events = read_events()
    assert_gapless(events)
    assert metrics(events) == [(0, {"ok": 1}), (1, {"ok": 2})]
    assert events[-2]["summary"] == {"ok": 2}


def test_an_unencodable_value_with_commit_false_raises_at_that_call() -> None:
    run = new_run()
    with pytest.raises(EncodeError, match="bad"):
        run.log({"bad": object()}, commit=False)
    run.log({"ok": 1})
    run.finish()
    events = read_events()
    assert metrics(events) == [(0, {"ok": 1})]
    assert ending(events) == ("finished", None)


def nested(levels: int) -> Any:
    value: Any = 0.5
    for _ in range(levels):
        value = {"k": value} if levels % 2 else [value]
    return value


@pytest.mark.parametrize("levels", [63, 300])
@pytest.mark.parametrize("commit", [True, False])
def test_a_value_nested_past_the_limit_raises_naming_the_key_and_writes_nothing(
    levels: int, commit: bool
) -> None:
    """The log's 64 levels count the event and its data: a value may nest 62 deep."""
    run = new_run()
    run.log({"ok": nested(62)})
    with pytest.raises(EncodeError, match="64 levels") as caught:
        run.log({"fine": 1, "deep": nested(levels)}, commit=commit)
    assert caught.value.key == "data/deep"
    run.finish()
    assert [step for step, _ in metrics()] == [0]


# --- summary ------------------------------------------------------------------------------


def test_summary_is_the_last_value_of_each_metric() -> None:
    run = new_run()
    run.log({"loss": 3.0, "acc": 0.1})
    run.log({"loss": 2.0})
    run.log({"loss": 1.0}, step=0)
    assert dict(run.summary) == {"loss": 1.0, "acc": 0.1}
    run.finish()
    events = read_events()
    assert of_type(events, "summary") == [events[-2]]
    assert events[-2]["summary"] == {"loss": 1.0, "acc": 0.1}


def test_explicit_summary_sets_win_and_are_written_at_once() -> None:
    run = new_run()
    run.log({"loss": 3.0})
    run.summary["loss"] = 0.5
    run.summary.update({"best_epoch": 4})
    run.log({"loss": 2.0, "acc": 0.9})
    assert run.summary["loss"] == 0.5
    assert run.summary.acc == 0.9
    run.finish()
    summaries = [e["summary"] for e in of_type(read_events(), "summary")]
    assert summaries == [
        {"loss": 0.5},
        {"best_epoch": 4},
        {"loss": 0.5, "acc": 0.9, "best_epoch": 4},
    ]


def test_no_summary_event_when_nothing_was_logged() -> None:
    new_run().finish()
    assert [e["type"] for e in read_events()] == ["run", "finish"]


def test_an_unencodable_summary_value_raises_and_writes_nothing() -> None:
    run = new_run()
    with pytest.raises(EncodeError):
        run.summary["bad"] = object()
    assert "bad" not in run.summary
    run.finish()
    assert [e["type"] for e in read_events()] == ["run", "finish"]


# --- finish, with, after finish -----------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "expected"),
    [(None, ("finished", None)), (0, ("finished", 0)), (2, ("failed", 2))],
)
def test_finish_status_follows_the_exit_code(exit_code: int | None, expected: tuple) -> None:
    run = new_run()
    run.finish(exit_code)
    assert ending(read_events()) == expected


@pytest.mark.parametrize("exit_code", [2**31, -(2**31) - 1, 2**63 - 1, np.int64(7), True])
def test_an_exit_code_within_64_bits_is_recorded_as_given(exit_code: Any) -> None:
    run = new_run()
    run.finish(exit_code)
    assert ending(read_events()) == ("failed", int(exit_code))


@pytest.mark.parametrize("exit_code", [2**63, -(2**63) - 1, 2**100, "oops", 1.5])
def test_an_exit_code_the_log_cannot_hold_is_dropped_with_a_warning_not_raised(
    exit_code: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = new_run()
    with caplog.at_level(logging.WARNING, logger="waddle"):
        run.finish(exit_code)
    assert ending(read_events()) == ("failed", None)
    assert [r for r in caplog.records if "exit code" in r.getMessage()] != []


def test_a_rank_beyond_what_the_store_records_is_refused_at_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RANK", str(2**31))
    with pytest.raises(UsageError, match="RANK"):
        new_run()
    assert not waddle_dir().exists()


def test_finish_is_idempotent() -> None:
    run = new_run()
    run.log({"a": 1})
    run.finish()
    run.finish()
    run.finish(exit_code=3)
    events = read_events()
    assert [e["type"] for e in events] == ["run", "metrics", "summary", "finish"]
    assert ending(events) == ("finished", None)


def test_finish_returns_promptly_with_the_system_sampler_running() -> None:
    run = waddle.init(id="r")  # system metrics on, default 10 s interval
    started = time.monotonic()
    run.finish()
    assert time.monotonic() - started < 2.0
    assert not [t for t in threading.enumerate() if t.name == "waddle-system"]


def test_nothing_is_written_after_finish() -> None:
    run = new_run(config={"lr": 0.1})
    run.finish()
    with pytest.raises(UsageError, match="finished"):
        run.log({"a": 1})
    run.config.lr = 0.2
    run.summary["late"] = 1
    assert run.config.lr == 0.2
    events = read_events()
    assert [e["type"] for e in events] == ["run", "finish"]


def test_finish_releases_the_stream_for_a_resume() -> None:
    new_run().finish()
    again = new_run(resume=True)
    again.finish()
    assert len(of_type(read_events(), "run")) == 2


def test_with_block_finishes_the_run() -> None:
    with new_run() as run:
        run.log({"a": 1})
    assert ending(read_events()) == ("finished", None)


def test_an_exception_in_a_with_block_fails_the_run_and_is_reraised() -> None:
    with pytest.raises(ValueError, match="diverged"), new_run() as run:
        run.log({"a": 1})
        raise ValueError("diverged")
    events = read_events()
    assert ending(events) == ("failed", 1)
    assert events[-2]["summary"] == {"a": 1}


def test_keyboard_interrupt_in_a_with_block_kills_the_run() -> None:
    with pytest.raises(KeyboardInterrupt), new_run():
        raise KeyboardInterrupt
    assert ending(read_events()) == ("killed", 130)


def test_finish_inside_a_with_block_is_not_repeated() -> None:
    with new_run() as run:
        run.finish(exit_code=5)
    events = read_events()
    assert [e["type"] for e in events] == ["run", "finish"]
    assert ending(events) == ("failed", 5)


def test_a_second_live_writer_of_the_same_stream_is_refused() -> None:
    run = new_run()
    with pytest.raises(waddle.StreamLockedError, match="RANK"):
        new_run(resume=True, reinit="create_new")
    run.finish()


# --- I/O trouble never reaches the training loop ------------------------------------------


def test_a_deleted_log_folder_costs_a_counter_and_a_warning_never_an_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = new_run()
    run.log({"before": 1})
    shutil.rmtree(waddle_dir() / "log" / "r")
    with caplog.at_level(logging.WARNING, logger="waddle"):
        for i in range(5000):  # enough bytes for the writer to notice and start over
            run.log({"after": i, "pad": "x" * 40})
        run.finish()
    events = read_events()
    first = events[0]["seq"]
    assert first > 0
    assert_gapless(events, first)
    assert events[-1]["dropped"] == {"segment deleted": first}
    assert run.dropped == first
    assert ending(events) == ("finished", None)
    messages = [r.getMessage() for r in caplog.records if r.name == "waddle"]
    assert [m for m in messages if "being dropped" in m and "segment deleted" in m] != []
    assert len([m for m in messages if "being dropped" in m]) == 1
    assert [m for m in messages if "lost" in m] == [
        f"waddle: run r lost {first} event(s) to I/O trouble: {{'segment deleted': {first}}}"
    ]

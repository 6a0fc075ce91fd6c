"""waddle.init and the module-level API; the process hooks (atexit, excepthook, SIGTERM)
tested on real subprocesses; the light import path; wandb scripts; distributed runs."""

from __future__ import annotations

import json
import random
import signal
import time

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
    run_script,
    start_script,
    streams,
    waddle_dir,
    wait_for_line,
)
from waddle.errors import UsageError
from waddle.producer.names import friendly_name

SIGTERM_EXIT = 128 + signal.SIGTERM


def run_event(**init_args: object) -> dict[str, object]:
    waddle.init(system_metrics=False, **init_args).finish()
    return read_events()[0]


def test_init_records_its_arguments_in_the_run_event() -> None:
    event = run_event(
        project="proj",
        name="first",
        config={"lr": 0.1},
        tags=["a", "b"],
        notes="try it",
        group="sweep-1",
        job_type="train",
        id="run1",
    )
    assert event["type"] == "run"
    assert event["seq"] == 0
    fields = {k: event[k] for k in ("run_id", "project", "name", "config", "tags")}
    assert fields == {
        "run_id": "run1",
        "project": "proj",
        "name": "first",
        "config": {"lr": 0.1},
        "tags": ["a", "b"],
    }
    assert (event["notes"], event["group"], event["job_type"]) == ("try it", "sweep-1", "train")
    assert (event["rank"], event["resumed"]) == (0, False)


def test_init_defaults() -> None:
    run = waddle.init(id="abc", system_metrics=False)
    assert (run.project, run.name, run.root) == (
        "uncategorized",
        friendly_name("abc"),
        waddle_dir(),
    )
    assert run.dir == str(waddle_dir() / "files" / "abc")
    run.finish()
    event = read_events()[0]
    assert (event["project"], event["name"], event["tags"]) == ("uncategorized", run.name, [])
    assert (event["notes"], event["group"], event["job_type"]) == (None, None, None)


def test_init_reads_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WADDLE_PROJECT", "env-project")
    monkeypatch.setenv("WADDLE_NAME", "env-name")
    monkeypatch.setenv("WADDLE_RUN_ID", "env-id")
    event = run_event()
    assert (event["project"], event["name"], event["run_id"]) == (
        "env-project",
        "env-name",
        "env-id",
    )


def test_waddle_dir_wins_then_dir_holds_a_dot_waddle_as_in_wandb(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """design.md section 2: ``$WADDLE_DIR`` is the Waddle folder; ``init(dir=X)`` (or
    ``$WANDB_DIR``) writes ``X/.waddle``, as wandb writes ``X/wandb``; else ``./.waddle``."""
    waddle.init(id="a", dir=tmp_path / "elsewhere", system_metrics=False).finish()
    assert streams(waddle_dir()) == ["a"]
    monkeypatch.delenv("WADDLE_DIR")
    waddle.init(id="b", dir=tmp_path / "elsewhere", system_metrics=False).finish()
    assert streams(tmp_path / "elsewhere" / ".waddle") == ["b"]
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "from-wandb"))
    waddle.init(id="c", system_metrics=False).finish()
    assert streams(tmp_path / "from-wandb" / ".waddle") == ["c"]
    monkeypatch.delenv("WANDB_DIR")
    waddle.init(id="d", system_metrics=False).finish()
    assert streams(tmp_path / ".waddle") == ["d"]
    waddle.init(id="e", root=tmp_path / "named", dir="ignored", system_metrics=False).finish()
    assert streams(tmp_path / "named") == ["e"]  # root= names the Waddle folder itself


def test_random_ids_are_distinct_and_names_follow_them() -> None:
    first = waddle.init(system_metrics=False)
    second = waddle.init(system_metrics=False)
    assert first.id != second.id
    assert sorted(streams()) == sorted([first.id, second.id])
    assert first.name == friendly_name(first.id)


@pytest.mark.parametrize(
    ("argument", "value"), [("mode", "online-ish"), ("resume", "sometimes"), ("resume", 1.5)]
)
def test_init_refuses_unknown_choices(argument: str, value: object) -> None:
    with pytest.raises(UsageError, match=argument):
        waddle.init(**{argument: value})
    assert not waddle_dir().exists()


@pytest.mark.parametrize(
    "bad", [{"name": 7}, {"group": 3}, {"project": 2024}, {"notes": 1.5}, {"job_type": 0}]
)
def test_non_string_metadata_never_makes_an_unreadable_run_event(bad: dict[str, object]) -> None:
    """A misuse raises UsageError at init, or is stored so that readers accept the event."""
    try:
        run = waddle.init(id="meta", system_metrics=False, **bad)
    except UsageError:
        assert not (waddle_dir() / "log" / "meta").exists()
        return
    run.finish()
    assert read_events()[0]["type"] == "run"


def test_an_unencodable_config_at_init_leaves_nothing_behind() -> None:
    with pytest.raises(waddle.EncodeError, match="bad"):
        waddle.init(id="cfg", config={"bad": object()}, system_metrics=False)
    assert not list((waddle_dir() / "log" / "cfg").glob("*.ndjson"))
    run = waddle.init(id="cfg", config={"good": 1}, system_metrics=False)
    run.finish()
    assert read_events()[0]["config"] == {"good": 1}


def test_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WADDLE_MODE", "disabled")
    run = waddle.init(project="p")
    run.log({"a": 1})
    run.finish()
    assert isinstance(run, waddle.Run)
    assert not waddle_dir().exists()


def test_module_level_api_follows_the_current_run() -> None:
    with pytest.raises(UsageError, match="init"):
        waddle.log({"a": 1})
    assert (waddle.run, waddle.summary) == (None, None)
    assert dict(waddle.config) == {}  # a pre-init config, not None (see test_config)
    waddle.finish()  # nothing to finish: no error

    run = waddle.init(id="mod", system_metrics=False)
    assert waddle.run is run
    assert waddle.config is run.config
    assert waddle.summary is run.summary
    waddle.log({"a": 1})
    waddle.log({"b": 2}, step=7)
    waddle.config.lr = 0.5
    waddle.summary["best"] = 1
    waddle.finish(exit_code=0)

    assert waddle.run is None
    with pytest.raises(UsageError):
        waddle.log({"a": 2})
    events = read_events()
    metrics = of_type(events, "metrics")
    assert [(e["step"], e["data"]) for e in metrics] == [(0, {"a": 1}), (7, {"b": 2})]
    assert of_type(events, "config")[0]["config"] == {"lr": 0.5}
    assert ending(events) == ("finished", 0)


def test_the_current_run_is_the_newest_live_one() -> None:
    older = waddle.init(id="older", system_metrics=False)
    newer = waddle.init(id="newer", system_metrics=False, reinit="create_new")
    assert waddle.config is newer.config
    newer.finish()
    assert waddle.config is older.config
    waddle.log({"x": 1})
    older.finish()
    assert of_type(read_events(stream="older"), "metrics")[0]["data"] == {"x": 1}


def test_unknown_module_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        _ = waddle.nope


def test_public_names_exist() -> None:
    missing = [name for name in waddle.__all__ if name not in ("run", "config", "summary")]
    assert all(hasattr(waddle, name) for name in missing)
    assert issubclass(waddle.EncodeError, waddle.UsageError)
    assert issubclass(waddle.UsageError, waddle.WaddleError)


def test_disabled_mode_writes_nothing_and_keeps_values_in_memory() -> None:
    with waddle.init(project="p", config={"lr": 0.1}, mode="disabled") as run:
        run.config.batch = 32
        run.config["depth"] = 4
        run.config.update({"wd": 0.01})
        run.log({"loss": 1.0})
        run.log({"loss": 0.5}, step=10, commit=False)
        waddle.log({"acc": 0.9})
        run.summary["best"] = 0.5
        assert waddle.summary is run.summary
    run.finish()
    assert dict(run.config) == {"lr": 0.1, "batch": 32, "depth": 4, "wd": 0.01}
    assert run.config.lr == 0.1
    assert run.summary["best"] == 0.5
    assert run.dropped == 0
    assert not waddle_dir().exists()


def test_finishing_a_disabled_run_ends_it_like_any_run() -> None:
    run = waddle.init(mode="disabled")
    assert waddle.config is run.config
    waddle.finish()
    assert waddle.run is None and waddle.config is not run.config
    with pytest.raises(UsageError):
        waddle.log({"a": 1})


# --- real processes: atexit, excepthook -------------------------------------------------


def test_a_run_never_finished_is_finished_at_exit() -> None:
    done = run_script("lifecycle.py", "no-finish")
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr
    events = read_events()
    assert [e["type"] for e in events[-2:]] == ["summary", "finish"]
    assert events[-2]["summary"] == {"loss": 0.2, "best": 0.2}
    assert ending(events) == ("finished", None)
    assert_gapless(events)


def test_an_uncaught_exception_fails_the_run_and_still_prints_its_traceback() -> None:
    done = run_script("lifecycle.py", "raise")
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr
    assert ending(read_events()) == ("failed", 1)


def test_an_uncaught_keyboard_interrupt_kills_the_run() -> None:
    done = run_script("lifecycle.py", "interrupt")
    assert done.returncode == -signal.SIGINT
    assert ending(read_events()) == ("killed", 130)


# --- real processes: SIGTERM ------------------------------------------------------------


def sigterm_child(case: str, *, stdin: bool = False):
    proc = start_script("sigterm.py", case, stdin=stdin)
    wait_for_line(proc, "ready")
    return proc


def test_sigterm_with_the_default_disposition_finishes_killed_then_dies_of_it() -> None:
    proc = sigterm_child("default")
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish_child(proc)
    assert rc == -signal.SIGTERM, err
    events = read_events()
    assert ending(events) == ("killed", SIGTERM_EXIT)
    assert events[-2]["summary"] == {"x": -1}


def test_sigterm_chains_to_the_programs_own_handler() -> None:
    proc = sigterm_child("handler")
    proc.send_signal(signal.SIGTERM)
    rc, out, err = finish_child(proc)
    assert (rc, out) == (3, "handler ran\n"), err
    assert ending(read_events()) == ("killed", SIGTERM_EXIT)


def test_an_ignored_sigterm_stays_ignored() -> None:
    proc = sigterm_child("ignore", stdin=True)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None, "the child died of a SIGTERM it ignores"
    proc.stdin.write(b"go on\n")
    rc, out, err = finish_child(proc)
    assert (rc, out) == (0, "still ignored: True\n"), err
    assert ending(read_events()) == ("finished", None)


def test_sigterm_during_a_tight_log_loop_never_deadlocks_or_tears_the_log(tmp_path) -> None:
    """Several processes, each hit by one to three SIGTERMs at a random moment."""
    rng = random.Random(1234)
    children = []
    for index in range(6):
        root = tmp_path / f"loop-{index}"
        proc = start_script("sigterm.py", "loop", env=child_env(WADDLE_DIR=str(root)))
        children.append((root, proc))
    for _, proc in children:
        wait_for_line(proc, "ready")
        time.sleep(rng.uniform(0.0, 0.03))
        for _ in range(rng.randint(1, 3)):
            proc.send_signal(signal.SIGTERM)
            time.sleep(rng.uniform(0.0, 0.005))
    for root, proc in children:
        rc, _, err = finish_child(proc, timeout=15)
        assert rc == -signal.SIGTERM, err
        events = raw_events(raw_log(root))
        assert_gapless(events)
        metrics = of_type(events, "metrics")
        assert [m["data"]["x"] for m in metrics] == list(range(-1, len(metrics) - 1))
        assert [m["step"] for m in metrics] == list(range(len(metrics)))
        assert ending(events) == ("killed", SIGTERM_EXIT)
        assert events[-2]["type"] == "summary"


def test_sigterm_while_finish_holds_the_log_still_kills_the_process() -> None:
    proc = start_script("sigterm.py", "in-finish")
    rc, out, _ = finish_child(proc)
    assert rc == -signal.SIGTERM, f"SIGTERM was swallowed: rc {rc}, stdout {out!r}"
    assert ending(read_events()) == ("killed", SIGTERM_EXIT)


def test_sigterm_with_a_disabled_run_dies_of_sigterm() -> None:
    proc = sigterm_child("disabled")
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish_child(proc)
    assert rc == -signal.SIGTERM, err
    assert not waddle_dir().exists()


def test_sigterm_is_chained_when_the_first_init_ran_in_a_thread() -> None:
    proc = sigterm_child("thread-first")
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish_child(proc)
    assert rc == -signal.SIGTERM, err
    main = [s for s in streams() if s != "worker"]
    assert ending(read_events(stream=main[0])) == ("killed", SIGTERM_EXIT)


# --- import cost, wandb scripts, distributed runs ---------------------------------------


def test_the_producer_path_does_not_import_the_server_side() -> None:
    done = run_script("light_import.py")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert ending(read_events()) == ("finished", None)


def test_a_wandb_script_runs_unchanged() -> None:
    done = run_script("wandb_style.py")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    events = read_events(stream=run_id)
    assert (events[0]["project"], events[0]["config"]) == ("compat", {"lr": 0.1, "epochs": 3})
    metrics = of_type(events, "metrics")
    assert [(m["step"], m["data"]["epoch"]) for m in metrics] == [(0, 0), (1, 1), (2, 2)]
    assert events[-2]["summary"] == {"epoch": 2, "loss": 0.1 / 3, "best": 0.25, "final_lr": 0.1}
    assert ending(events) == ("finished", None)


def test_ranks_of_one_run_write_their_own_streams() -> None:
    procs = [
        start_script("lifecycle.py", "finish", env=child_env(WADDLE_RUN_ID="dist", RANK=rank))
        for rank in ("0", "1")
    ]
    for proc in procs:
        rc, _, err = finish_child(proc)
        assert rc == 0, err
    assert streams() == ["dist", "dist.1"]
    for stream, rank in (("dist", 0), ("dist.1", 1)):
        events = read_events(stream=stream)
        assert (events[0]["type"], events[0]["run_id"], events[0]["rank"]) == ("run", "dist", rank)
        assert ending(events) == ("finished", None)

"""What wandb scripts and integrations expect of ``init`` and the run (issue 12): WANDB_*
fallbacks, run attributes, config files and int keys, a second ``init``, the pre-init
config, media values, and the line ``finish`` prints."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

import waddle
from tests.helpers import of_type, read_events, streams, waddle_dir
from waddle.errors import UsageError
from waddle.producer.run import DisabledRun

WANDB_ENV = (
    "WANDB_MODE",
    "WANDB_PROJECT",
    "WANDB_NAME",
    "WANDB_DIR",
    "WANDB_RUN_ID",
    "WANDB_RESUME",
    "WANDB_TAGS",
    "WANDB_NOTES",
    "WANDB_RUN_GROUP",
    "WANDB_JOB_TYPE",
    "WANDB_SILENT",
    "WADDLE_SILENT",
    "WADDLE_TAGS",
)


@pytest.fixture(autouse=True)
def no_wandb_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WANDB_ENV:
        monkeypatch.delenv(name, raising=False)


# --- environment ---------------------------------------------------------------------------


def test_wandb_variables_fill_what_init_is_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "WANDB_PROJECT": "p",
        "WANDB_NAME": "n",
        "WANDB_RUN_ID": "fromenv",
        "WANDB_TAGS": "a, b,,c",
        "WANDB_NOTES": "some notes",
        "WANDB_RUN_GROUP": "g",
        "WANDB_JOB_TYPE": "train",
    }.items():
        monkeypatch.setenv(name, value)
    run = waddle.init(system_metrics=False)
    assert (run.project, run.name, run.id) == ("p", "n", "fromenv")
    assert (run.tags, run.notes, run.group, run.job_type) == (
        ("a", "b", "c"),
        "some notes",
        "g",
        "train",
    )
    run.finish()
    event = read_events()[0]
    assert (event["tags"], event["notes"], event["group"], event["job_type"]) == (
        ["a", "b", "c"], "some notes", "g", "train"
    )  # fmt: skip


def test_waddle_variables_win_over_wandb_ones_and_arguments_over_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "from-wandb")
    monkeypatch.setenv("WADDLE_PROJECT", "from-waddle")
    monkeypatch.setenv("WANDB_NAME", "wandb-name")
    run = waddle.init(system_metrics=False, name="given")
    assert (run.project, run.name) == ("from-waddle", "given")
    run.finish()


@pytest.mark.parametrize("variable", ["WANDB_MODE", "WADDLE_MODE"])
def test_mode_disabled_from_the_environment_writes_nothing(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, "disabled")
    run = waddle.init(system_metrics=False)
    assert isinstance(run, DisabledRun) and run.disabled
    run.log({"a": 1})
    run.finish()
    assert not waddle_dir().exists()


def test_lightnings_dryrun_mode_is_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # what WandbLogger(offline=True) sets
    run = waddle.init(id="dry", system_metrics=False)
    assert run.offline and not run.disabled
    run.finish()
    assert streams() == ["dry"]


def test_wandb_resume_and_run_id_continue_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    waddle.init(id="again", system_metrics=False).finish()
    monkeypatch.setenv("WANDB_RUN_ID", "again")
    monkeypatch.setenv("WANDB_RESUME", "allow")
    run = waddle.init(system_metrics=False)
    assert run.resumed
    run.finish()
    assert [e["resumed"] for e in of_type(read_events(), "run")] == [False, True]


# --- the run's attributes --------------------------------------------------------------------


def test_run_attributes_as_wandb_has_them() -> None:
    settings = waddle.Settings(silent=True)
    run = waddle.init(
        project="proj", id="attrs", tags=["x"], group="g", settings=settings, system_metrics=False
    )
    assert run.url == "http://127.0.0.1:8080/#project=proj&run=attrs"
    assert run.get_url() == run.url and run.project_name() == "proj"
    assert (run.path, run.entity, run.offline, run.disabled) == ("proj/attrs", None, True, False)
    assert (run.tags, run.group, run.notes, run.job_type, run.resumed) == (
        ("x",),
        "g",
        None,
        None,
        False,
    )
    assert run.settings is settings and run.start_time > 0
    assert isinstance(run.dir, str) and Path(run.dir).is_dir()
    assert Path(run.dir).parent.parent == waddle_dir()
    run._label(code="transformers_trainer", repo="x")  # Hugging Face calls it; a no-op
    run.finish()
    assert [e["type"] for e in read_events()] == ["run", "finish"]


# --- config -----------------------------------------------------------------------------------


def test_int_keys_are_made_strings_at_every_depth_as_wandb_does() -> None:
    run = waddle.init(config={1: {2: [{3: "x"}]}}, system_metrics=False)
    run.config.update({"id2label": {0: "LABEL_0", 1: "LABEL_1"}}, allow_val_change=True)
    run.config[7] = "seven"
    run.finish()
    events = read_events()
    assert events[0]["config"] == {"1": {"2": [{"3": "x"}]}}
    assert [e["config"] for e in of_type(events, "config")] == [
        {"id2label": {"0": "LABEL_0", "1": "LABEL_1"}},
        {"7": "seven"},
    ]


def test_a_config_file_is_loaded_and_wandb_value_wrappers_unwrapped(tmp_path: Path) -> None:
    yaml_file = tmp_path / "config-defaults.yaml"
    yaml_file.write_text("wandb_version: 1\nlr:\n  desc: learning rate\n  value: 0.1\nlayers: 3\n")
    json_file = tmp_path / "config.json"
    json_file.write_text(json.dumps({"batch": 8}))
    run = waddle.init(config=str(yaml_file), system_metrics=False)
    assert dict(run.config) == {"lr": 0.1, "layers": 3}
    run.config.update(json_file)
    assert dict(run.config) == {"lr": 0.1, "layers": 3, "batch": 8}
    run.finish()


def test_a_yaml_config_without_pyyaml_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(UsageError, match="pip install pyyaml"):
        waddle.init(config=path, system_metrics=False)
    with pytest.raises(UsageError, match="cannot read"):
        waddle.init(config=tmp_path / "missing.yaml", system_metrics=False)


def test_config_include_and_exclude_keys_filter_inits_config() -> None:
    config = {"lr": 0.1, "layers": 3, "secret": "x"}
    run = waddle.init(config=config, config_exclude_keys=["secret"], system_metrics=False)
    assert dict(run.config) == {"lr": 0.1, "layers": 3}
    run = waddle.init(config=config, config_include_keys=["lr", "nope"], system_metrics=False)
    assert dict(run.config) == {"lr": 0.1}
    run.finish()


def test_config_set_before_init_is_applied_by_it() -> None:
    assert waddle.config is not None
    waddle.config.update({"lr": 0.1, "layers": 2})
    waddle.config["batch"] = 4
    run = waddle.init(config={"layers": 3}, system_metrics=False)  # init's config wins
    assert dict(waddle.config) == {"lr": 0.1, "layers": 3, "batch": 4}
    run.finish()
    assert read_events()[0]["config"] == {"lr": 0.1, "layers": 3, "batch": 4}
    assert dict(waddle.config) == {}  # used once: the next init starts clean


def test_from_waddle_import_star_does_not_freeze_the_current_run() -> None:
    namespace: dict[str, object] = {}
    exec("from waddle import *", namespace)
    assert not {"run", "config", "summary"} & set(namespace)
    assert {"init", "log", "finish", "define_metric", "Settings", "Api"} <= set(namespace)


# --- a second init -----------------------------------------------------------------------------


def test_a_second_init_finishes_the_first_as_wandb_does() -> None:
    first = waddle.init(id="first", system_metrics=False)
    second = waddle.init(id="second", system_metrics=False)
    assert waddle.run is second
    with pytest.raises(UsageError, match="finished"):
        first.log({"a": 1})
    assert of_type(read_events(stream="first"), "finish")[0]["status"] == "finished"
    assert waddle.init(reinit="return_previous") is second
    second.finish()


# --- media values ------------------------------------------------------------------------------


def test_media_waddle_does_not_record_are_left_out_with_one_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = waddle.init(id="media", system_metrics=False)
    for step in range(3):
        waddle.log({"loss": float(step), "page": waddle.Html("<p>"), "hist": waddle.Histogram([1])})
    run.log(
        {"chart": waddle.plot.line(None, "x", "y"), "objs": [waddle.Object3D(None)]}, commit=False
    )
    run.log({"acc": 1.0})
    run.finish()
    metrics = [e["data"] for e in of_type(read_events(), "metrics")]
    assert [sorted(data) for data in metrics] == [["hist", "loss"]] * 3 + [["acc"]]
    err = capsys.readouterr().err
    assert err.count("wandb.Html is not recorded") == 1
    assert err.count("wandb.Plot is not recorded") == 1
    with pytest.raises(waddle.EncodeError):  # an object that is no media type stays misuse
        waddle.init(id="other", system_metrics=False).log({"x": object()})


# --- the line finish prints --------------------------------------------------------------------


def test_finish_says_where_the_run_is_and_how_to_see_it(capsys: pytest.CaptureFixture[str]) -> None:
    run = waddle.init(id="said", name="named", system_metrics=False)
    run.finish()
    run.finish()  # once only
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"waddle: run named (said) is in {waddle_dir()}; "
        f"see it with: waddle serve --dir {waddle_dir()}\n"
    )


@pytest.mark.parametrize("how", ["settings", "WADDLE_SILENT", "WANDB_SILENT"])
def test_finish_is_silent_when_asked(
    how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = waddle.Settings(silent=True) if how == "settings" else None
    if how != "settings":
        monkeypatch.setenv(how, "true")
    waddle.init(system_metrics=False, settings=settings).finish()
    assert capsys.readouterr().err == ""


def test_a_closed_stderr_never_makes_finish_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stderr", closed)  # as at interpreter exit, or under pythonw
    run = waddle.init(id="closed", system_metrics=False)
    run.finish()
    monkeypatch.setattr(sys, "stderr", None)
    waddle.init(id="none", system_metrics=False).finish()
    assert ending_status("closed") == ending_status("none") == "finished"


def ending_status(stream: str) -> str:
    return str(read_events(stream=stream)[-1]["status"])

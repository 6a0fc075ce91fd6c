"""A probe of every item of the wandb surface that issue 12 lists, through
``import waddle as wandb``: none is an AttributeError, and each does what docs/wandb.md
says (works, a local equivalent, or a harmless answer)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import waddle as wandb
from tests.helpers import of_type, read_events
from waddle.producer import terminal
from waddle.producer.media.stand_ins import MediaStandIn

torch = pytest.importorskip("torch")

MODULE_SURFACE = [
    "init", "log", "finish", "run", "config", "summary", "define_metric", "Settings",
    "login", "setup", "require", "termlog", "termwarn", "termerror", "util", "Api", "watch",
    "unwatch", "save", "alert", "AlertLevel", "mark_preempting", "Run", "RunDisabled",
    "Image", "Histogram", "Table", "Artifact", "Audio", "Video", "Html", "Object3D", "plot",
    "log_artifact", "use_artifact",
]  # fmt: skip
RUN_SURFACE = [
    "id", "name", "project", "config", "summary", "log", "finish", "define_metric", "url",
    "entity", "tags", "notes", "group", "job_type", "resumed", "offline", "disabled", "path",
    "start_time", "settings", "dir", "_label", "get_url", "project_name",
]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WADDLE_SILENT", "WANDB_SILENT", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(terminal, "_printed", set())


def test_every_module_level_name_is_there() -> None:
    missing = [name for name in MODULE_SURFACE if not hasattr(wandb, name)]
    assert missing == []


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_every_run_attribute_is_there(mode: str) -> None:
    run = wandb.init(mode=mode, settings=wandb.Settings(silent=True), system_metrics=False)
    missing = [name for name in RUN_SURFACE if not hasattr(run, name)]
    assert missing == []
    assert isinstance(run, wandb.Run) and isinstance(run.dir, str)
    assert run.disabled is (mode == "disabled")
    assert isinstance(run, wandb.RunDisabled) is (mode == "disabled")
    run.finish()


def test_a_script_written_for_wandb_runs_and_logs(capsys: pytest.CaptureFixture[str]) -> None:
    assert wandb.login() is True and wandb.login(key="x", relogin=True) is True
    assert wandb.setup() is None and wandb.require("service") is None
    assert len(wandb.util.generate_id()) == 12
    settings = wandb.Settings(silent=True, project="ignored")
    assert settings.silent is True and settings.anything_else is None
    wandb.config.epochs = 2  # before init: kept and applied by init
    run = wandb.init(project="probe", config={"lr": 0.1}, settings=settings, system_metrics=False)
    assert wandb.run is run and dict(wandb.config) == {"epochs": 2, "lr": 0.1}
    wandb.define_metric("step")
    wandb.define_metric("val/*", step_metric="step", summary="max", goal="maximize")
    wandb.watch(torch.nn.Linear(2, 1), log="all")
    Path("model.pt").write_bytes(b"weights")
    assert wandb.save("*.pt") == ["model.pt"]
    wandb.alert(title="t", text="x", level=wandb.AlertLevel.WARN)
    wandb.mark_preempting()
    wandb.unwatch()
    wandb.log({"val/acc": 0.5, "step": 1, "page": wandb.Html("<p>"), "t": wandb.Table()})
    wandb.log({"val/acc": 0.3, "step": 2, "chart": wandb.plot.line(None, "x", "y")})
    model = wandb.Artifact("model", type="model")
    with model.new_file("weights.bin", mode="wb") as file:
        file.write(b"kept")
    wandb.log_artifact(model)
    assert wandb.use_artifact("model:latest").files()[0]["path"] == "weights.bin"
    for kind in (wandb.Html, wandb.Object3D, wandb.Histogram):
        kind([1, 2])
    wandb.termlog("info")
    wandb.summary["best"] = 1
    run.finish()
    assert wandb.run is None
    events = read_events()
    assert [sorted(e["data"]) for e in of_type(events, "metrics")] == [
        ["step", "t", "val/acc"],
        ["step", "val/acc"],
    ]
    summary = of_type(events, "summary")[-1]["summary"]
    assert {k: summary[k] for k in ("val/acc", "step", "best")} == {
        "val/acc": 0.5,  # val/* keeps its max
        "step": 2,
        "best": 1,
    }
    assert [e["name"] for e in of_type(events, "artifact")] == ["model.pt"]
    assert [e["type"] for e in of_type(events, "artifact_version")] == ["artifact_version"]
    assert [e["metric"] for e in of_type(events, "define_metric")] == ["step", "val/*"]
    err = capsys.readouterr().err
    assert "alert [WARN] t: x" in err
    assert "waddle: info" not in err and "see it with" not in err  # Settings(silent=True)


def test_termlog_prints_unless_silenced_by_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb.termlog("hello")
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb.termlog("muted")
    assert capsys.readouterr().err == "waddle: hello\n"


def test_init_dir_as_in_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WADDLE_DIR")
    run = wandb.init(dir=tmp_path / "save", settings=wandb.Settings(silent=True))
    run.finish()
    assert Path(run.root) == tmp_path / "save" / ".waddle"
    assert (Path(run.root) / "log" / run.id).is_dir()


def test_a_stand_in_from_another_process_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in unpickled here (a DataLoader worker made it) never ran ``__init__`` in
    this process; ``log()`` still leaves it out and writes the step's other values."""
    sent = pickle.dumps(wandb.Html("<p>"))
    monkeypatch.setattr(MediaStandIn, "made", False)  # as in a process that made none
    run = wandb.init(project="probe", settings=wandb.Settings(silent=True), system_metrics=False)
    run.log({"loss": 0.5, "page": pickle.loads(sent)})
    run.finish()
    assert [e["data"] for e in of_type(read_events(), "metrics")] == [{"loss": 0.5}]

"""The local answers to wandb's module-level calls that have no server to go to."""

from __future__ import annotations

import copy

import pytest

from waddle.compat import surface
from waddle.errors import UsageError
from waddle.producer import terminal


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WADDLE_SILENT", "WANDB_SILENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(terminal, "_printed", set())


def test_term_functions_print_prefixed_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    surface.termlog("two\nlines")
    surface.termwarn("careful")
    surface.termerror("broken", prefix=False)
    surface.termlog("no newline", newline=False)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "waddle: two\nwaddle: lines\nwaddle: WARNING careful\nbroken\nwaddle: no newline"
    )


def test_repeat_false_prints_a_text_once(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        surface.termwarn("once", repeat=False)
        surface.termwarn("always")
    assert capsys.readouterr().err.count("once") == 1


@pytest.mark.parametrize("variable", ["WADDLE_SILENT", "WANDB_SILENT"])
def test_silent_mutes_information_but_not_warnings(
    variable: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(variable, "true")
    surface.termlog("info")
    surface.termwarn("warning")
    assert capsys.readouterr().err == "waddle: WARNING warning\n"


def test_calls_without_meaning_offline_succeed_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    assert surface.login(key="x", relogin=True) is True
    assert surface.setup(surface.Settings()) is None
    assert surface.require("service") is None
    assert surface.mark_preempting() is None
    assert surface.unwatch() is None
    assert capsys.readouterr().err == ""


def test_what_needs_a_run_says_so_once_without_one(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        surface.watch(object(), log="all", log_freq=10)
        assert surface.save("*.pt") == []
        assert surface.log_artifact("model.pt") == "model.pt"
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[2] for line in lines] == ["watch()", "save()", "log_artifact()"]
    with pytest.raises(UsageError, match="init"):
        surface.use_artifact("model:latest")


def test_alert_prints_its_level_title_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    surface.alert("Loss is NaN", "at step 12", level=surface.AlertLevel.ERROR)
    surface.alert("Done", "all good", level="INFO", wait_duration=60)
    assert capsys.readouterr().err.splitlines() == [
        "waddle: WARNING alert [ERROR] Loss is NaN: at step 12",
        "waddle: WARNING alert [INFO] Done: all good",
    ]


def test_settings_keep_what_they_are_given_and_read_none_otherwise() -> None:
    settings = surface.Settings(silent=True, _disable_stats=True)
    settings.update({"mode": "offline"}, start_method="thread")
    assert (settings.silent, settings._disable_stats, settings.mode) == (True, True, "offline")
    assert settings.start_method == "thread" and settings.never_set is None
    assert copy.deepcopy(settings).mode == "offline"

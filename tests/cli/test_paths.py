"""waddle.paths: the root rules of design.md section 2 and the default paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from waddle import paths


def test_init_dir_names_the_folder_that_holds_dot_waddle(tmp_path, monkeypatch):
    monkeypatch.delenv("WADDLE_DIR", raising=False)
    assert paths.root_dir(tmp_path) == tmp_path / ".waddle"
    monkeypatch.chdir(tmp_path)
    assert paths.root_dir() == tmp_path / ".waddle"


def test_waddle_dir_names_the_folder_itself_and_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("WADDLE_DIR", str(tmp_path / "here"))
    assert paths.root_dir(tmp_path / "elsewhere") == tmp_path / "here"
    assert paths.command_root() == tmp_path / "here"


def test_a_commands_dir_is_the_folder_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("WADDLE_DIR", str(tmp_path / "env"))
    assert paths.command_root(tmp_path / "w") == tmp_path / "w"
    monkeypatch.delenv("WADDLE_DIR")
    monkeypatch.chdir(tmp_path)
    assert paths.command_root() == tmp_path / ".waddle"


@pytest.mark.parametrize(
    ("func", "name"),
    [
        (paths.log_dir, "log"),
        (paths.state_dir, "state"),
        (paths.blobs_dir, "blobs"),
        (paths.duckdb_path, "waddle.duckdb"),
    ],
)
def test_default_paths_sit_in_the_root(func, name):
    assert func(Path("/r")) == Path("/r") / name


def test_the_snapshot_sits_next_to_its_database():
    assert paths.snapshot_path("/x/my.duckdb") == Path("/x/my.runs.parquet")

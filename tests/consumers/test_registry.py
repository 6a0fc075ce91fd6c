"""The registry: atomic state files, registration, removal, the one-instance lock."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from waddle.consumers.registry import StateStore, destination_name
from waddle.errors import ConsumerLockedError, InvalidIdError, PermanentError
from waddle.eventlog.reader import Offset
from waddle.ids import is_valid_id


def test_publish_load_and_list(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    assert registry.load("duckdb") == {} and registry.registered() == []
    registry.publish("duckdb", {"b": Offset(5, 100, 9), "a": Offset()})
    registry.publish("relay", {})
    assert registry.load("duckdb") == {"a": Offset(), "b": Offset(5, 100, 9)}
    assert [r.name for r in registry.registered()] == ["duckdb", "relay"]
    assert [p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".json"] != []
    assert not list((tmp_path / "state").glob(".*tmp"))


def test_remove_unregisters_and_is_refused_while_running(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    registry.publish("relay", {"a": Offset(0, 10, 1)})
    with registry.lock("relay"):
        assert registry.is_running("relay")
        with pytest.raises(ConsumerLockedError, match="already running"):
            registry.remove("relay")
    assert registry.remove("relay")
    assert not registry.remove("relay")
    assert registry.registered() == []


def test_names_become_paths_so_bad_ones_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidIdError):
        StateStore(tmp_path).publish("../x", {})


def test_a_corrupt_state_file_names_the_remedy(tmp_path: Path) -> None:
    registry = StateStore(tmp_path)
    registry.publish("x", {})
    (tmp_path / "state" / "x.json").write_text("{not json")
    with pytest.raises(PermanentError, match="waddle consumers rm x"):
        registry.load("x")


def test_a_name_per_destination_the_default_keeps_the_plain_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "w" / "waddle.duckdb"
    (tmp_path / "link").symlink_to(tmp_path / "w", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for same in (default, Path("w/waddle.duckdb"), tmp_path / "link" / "waddle.duckdb"):
        assert destination_name("duckdb", same, default) == "duckdb"
    other = tmp_path / "elsewhere.duckdb"
    name = destination_name("duckdb", "elsewhere.duckdb", default)
    assert name == "duckdb-" + hashlib.sha256(str(other.resolve()).encode()).hexdigest()[:8]
    assert is_valid_id(name) and destination_name("duckdb", other, default) == name
    assert destination_name("duckdb", tmp_path / "third.duckdb", default) not in ("duckdb", name)

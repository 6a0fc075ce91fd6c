"""Creating and migrating the store: all of it in one transaction, or none of it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from waddle.errors import StoreError
from waddle.store import schema as store


def _tables(path: Path) -> set[str]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }


def _version(path: Path) -> str:
    with duckdb.connect(str(path), read_only=True) as con:
        ((value,),) = con.execute("SELECT value FROM _waddle.meta").fetchall()
    return str(value)


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A store as version 3 left it, reduced to its version row."""
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA _waddle")
        con.execute("CREATE TABLE _waddle.meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO _waddle.meta VALUES ('schema_version', '3')")
    return path


def test_a_failed_migration_leaves_the_store_as_it_was(
    old_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(store.MIGRATIONS, 3, ("ALTER TABLE no_such_table ADD COLUMN x INTEGER",))
    with pytest.raises(StoreError, match="cannot create the schema"):
        store.connect(old_store)
    assert _tables(old_store) == {"meta"}
    assert _version(old_store) == "3"


def test_the_next_open_creates_and_migrates_everything(
    old_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(store.MIGRATIONS, 3, ("ALTER TABLE no_such_table ADD COLUMN x INTEGER",))
    with pytest.raises(StoreError):
        store.connect(old_store)
    monkeypatch.undo()
    store.connect(old_store).close()
    assert {"meta", "offsets", "runs", "metrics", "quarantine"} <= _tables(old_store)
    assert _version(old_store) == str(store.SCHEMA_VERSION)

"""Plug-ins: the example distribution in ``consumers/waddle-counts`` installed by pip into a
site folder and run by name through real entry-point discovery by ``waddle-consume``;
and finding consumers by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.consumers.logs import CONSUME, read_tables, write_run
from waddle.consumers import plugins
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.errors import UsageError

PLUGIN = Path(__file__).resolve().parents[2] / "consumers" / "waddle-counts"


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """The example installed by pip into a site folder; the environment that puts it on
    the path. The source is copied first, so that the build leaves the repository alone."""
    source = tmp_path / "waddle-counts"
    shutil.copytree(PLUGIN, source)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    done = subprocess.run(
        [*pip, "--no-build-isolation", "--target", str(site), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def test_the_documented_plugin_is_found_by_name_and_runs(
    tmp_path: Path, installed: dict[str, str]
) -> None:
    root = tmp_path / "w"
    write_run(root, "one", 30, segment_bytes=1024)
    write_run(root, "two", 5)
    command = [*CONSUME, "--dir", str(root), "--consumer", "counts", "--once"]
    done = subprocess.run(command, env=installed, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counts = json.loads((root / "counts.json").read_text())
    assert counts["counts"] == {
        "one": {"run": 1, "metrics": 30, "summary": 1, "finish": 1},
        "two": {"run": 1, "metrics": 5, "summary": 1, "finish": 1},
    }
    assert counts["offsets"]["one"]["seq"] == 32
    published = json.loads((root / "state" / "counts.json").read_text())
    assert published["offsets"] == counts["offsets"]
    write_run(root, "three", 2)
    again = subprocess.run(command, env=installed, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    counts = json.loads((root / "counts.json").read_text())
    assert counts["counts"]["one"]["metrics"] == 30
    assert counts["counts"]["three"]["metrics"] == 2


def test_a_plugin_runs_beside_the_duckdb_writer(tmp_path: Path, installed: dict[str, str]) -> None:
    root = tmp_path / "w"
    write_run(root, "one", 10)
    command = [*CONSUME, "--dir", str(root), "--consumer", "counts", "--consumer", "duckdb"]
    done = subprocess.run(
        [*command, "--once"], env=installed, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (root / "counts.json").exists()
    assert len(read_tables(root / "waddle.duckdb")["metrics"]) == 30
    assert sorted(p.name for p in (root / "state").glob("*.json")) == ["counts.json", "duckdb.json"]


def test_module_colon_class_needs_no_entry_point(tmp_path: Path, installed: dict[str, str]) -> None:
    root = tmp_path / "w"
    write_run(root, "one", 3)
    done = subprocess.run(
        [*CONSUME, "--dir", str(root), "--consumer", "waddle_counts:CountsConsumer", "--once"],
        env=installed,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((root / "counts.json").read_text())["counts"]["one"]["metrics"] == 3


def test_builtin_and_unknown_names(tmp_path: Path) -> None:
    assert "duckdb" in plugins.available()
    writer = plugins.create("duckdb", tmp_path, duckdb_path=tmp_path / "x.duckdb")
    assert isinstance(writer, DuckDBWriter) and writer.path == tmp_path / "x.duckdb"
    with pytest.raises(UsageError, match="no consumer named 'nope'"):
        plugins.create("nope", tmp_path)
    with pytest.raises(UsageError, match="cannot import 'no_such_module'"):
        plugins.create("no_such_module:Thing", tmp_path)
    with pytest.raises(UsageError, match="has no 'Nothing'"):
        plugins.create("waddle.consumers.memory:Nothing", tmp_path)


class NotAConsumer:
    def __init__(self, root: Path) -> None:
        self.name = "x"


class BadName:
    name = "../escape"
    durable = True

    def __init__(self, root: Path) -> None:
        pass

    def start(self) -> None: ...
    def handle(self) -> None: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


def test_an_object_that_breaks_the_protocol_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not follow the protocol"):
        plugins.create(f"{__name__}:NotAConsumer", tmp_path)
    with pytest.raises(UsageError, match="invalid name"):
        plugins.create(f"{__name__}:BadName", tmp_path)


def test_the_example_is_exactly_once_in_process(
    tmp_path: Path, installed: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(installed["PYTHONPATH"].split(os.pathsep)[0])
    monkeypatch.delitem(sys.modules, "waddle_counts", raising=False)
    from waddle_counts import CountsConsumer as counts_consumer

    root = tmp_path / "w"
    write_run(root, "one", 50, segment_bytes=512)
    consumer = counts_consumer(root)  # type: ignore[operator]
    run_consumer(consumer, root, threading.Event(), once=True)
    again = counts_consumer(root)  # type: ignore[operator]
    run_consumer(again, root, threading.Event(), once=True)
    saved = json.loads((root / "counts.json").read_text())
    assert saved["counts"]["one"] == {"run": 1, "metrics": 50, "summary": 1, "finish": 1}

"""The DuckDB writer's media tables: typed values and artifact events, read back."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import duckdb

from tests.consumers.logs import open_stream, run_fields
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.store import schema as store


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def image(name: str, caption: str | None = None) -> dict[str, Any]:
    return {
        "_type": "image",
        "sha256": sha(name),
        "size": 100,
        "format": "png",
        "width": 8,
        "height": 4,
        "caption": caption,
    }


HISTOGRAM = {"_type": "histogram", "bins": [0.0, 0.5, 1.0], "counts": [3, 4]}
TABLE = {
    "_type": "table",
    "sha256": sha("table"),
    "size": 50,
    "format": "json",
    "columns": ["a", "b"],
    "nrows": 2,
}
AUDIO = {
    "_type": "audio",
    "sha256": sha("audio"),
    "size": 9,
    "format": "wav",
    "sample_rate": 8000,
    "duration": 0.5,
    "caption": "hi",
}


def write(root: Path, run_id: str, events: list[tuple[str, dict[str, Any]]]) -> None:
    writer = open_stream(root, run_id)
    try:
        writer.append("run", run_fields(run_id))
        for kind, fields in events:
            writer.append(kind, fields)
    finally:
        writer.close()


def build(root: Path) -> Path:
    path = root / "waddle.duckdb"
    run_consumer(DuckDBWriter(root, path), root, threading.Event(), once=True)
    return path


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_typed_values_go_to_the_media_tables_not_to_metrics(tmp_path: Path) -> None:
    write(
        tmp_path,
        "r",
        [
            ("metrics", {"step": 0, "data": {"loss": 0.5, "img": image("a", "cat")}}),
            (
                "metrics",
                {
                    "step": 1,
                    "data": {
                        "loss": 0.25,
                        "samples": [image("b"), image("c", "c")],
                        "eval": {"hist": HISTOGRAM, "preds": TABLE},
                        "sound": AUDIO,
                    },
                },
            ),
        ],
    )
    path = build(tmp_path)
    assert query(path, "SELECT key, step, value FROM metrics ORDER BY step") == [
        ("loss", 0, 0.5),
        ("loss", 1, 0.25),
    ]
    assert query(path, "SELECT count(*) FROM logged_values") == [(0,)]
    rows = query(
        path,
        "SELECT run_id, rank, key, step, idx, kind, sha256, size, format, width, height, "
        "caption, meta FROM media ORDER BY step, key, idx",
    )
    assert [row[:12] for row in rows] == [
        ("r", 0, "img", 0, 0, "image", sha("a"), 100, "png", 8, 4, "cat"),
        ("r", 0, "eval.preds", 1, 0, "table", sha("table"), 50, "json", None, None, None),
        ("r", 0, "samples", 1, 0, "image", sha("b"), 100, "png", 8, 4, None),
        ("r", 0, "samples", 1, 1, "image", sha("c"), 100, "png", 8, 4, "c"),
        ("r", 0, "sound", 1, 0, "audio", sha("audio"), 9, "wav", None, None, "hi"),
    ]
    metas = {row[2]: json.loads(row[12]) for row in rows}
    assert metas["eval.preds"] == {"columns": ["a", "b"], "nrows": 2}
    assert metas["sound"] == {"sample_rate": 8000, "duration": 0.5}
    assert query(path, "SELECT key, step, bins, counts FROM histograms") == [
        ("eval.hist", 1, [0.0, 0.5, 1.0], [3, 4])
    ]
    assert query(path, "SELECT last_step FROM runs") == [(1,)]


def test_malformed_typed_values_are_quarantined_and_the_rest_is_stored(tmp_path: Path) -> None:
    bad = [
        {**image("x"), "sha256": "../../etc/passwd"},
        {**image("x"), "width": -1},
        {**HISTOGRAM, "counts": [1]},
        {**HISTOGRAM, "bins": ["a", 1, 2]},
        {**image("x"), "size": 2**63},
        [image("x"), HISTOGRAM],
    ]
    events = [("metrics", {"step": 0, "data": {"img": image("good")}})]
    events += [("metrics", {"step": i + 1, "data": {"v": value}}) for i, value in enumerate(bad)]
    events.append(("metrics", {"step": 99, "data": {"img": image("after"), "loss": 1.0}}))
    write(tmp_path, "r", events)
    path = build(tmp_path)
    assert query(path, "SELECT step, sha256 FROM media ORDER BY step") == [
        (0, sha("good")),
        (99, sha("after")),
    ]
    assert query(path, "SELECT count(*) FROM histograms") == [(0,)]
    assert query(path, "SELECT seq FROM quarantine ORDER BY seq") == [(i,) for i in range(2, 8)]
    assert query(path, "SELECT key, step FROM metrics") == [("loss", 99)]


def test_an_old_store_gets_the_media_tables_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(store.SCHEMA.split("CREATE TABLE IF NOT EXISTS media")[0])
        con.execute("ALTER TABLE runs DROP COLUMN metric_defs")
        con.execute("INSERT INTO _waddle.meta VALUES ('schema_version', '2')")
    store.connect(path).close()
    tables = {row[0] for row in query(path, "SELECT table_name FROM duckdb_tables()")}
    assert {"media", "histograms", "artifact_versions", "artifact_uses", "artifacts"} <= tables
    assert query(path, "SELECT value FROM _waddle.meta") == [(str(store.SCHEMA_VERSION),)]


def version_event(name: str, version: int, content: str, aliases: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "artifact_type": "dataset",
        "version": version,
        "digest": sha(content),
        "manifest": sha(f"manifest {content}"),
        "size": 100 + version,
        "files": 2,
        "aliases": aliases,
        "metadata": {"rows": version},
    }


def test_artifact_versions_and_uses_are_stored(tmp_path: Path) -> None:
    write(
        tmp_path,
        "maker",
        [
            ("artifact_version", version_event("ds", 0, "a", ["latest"])),
            ("artifact_version", version_event("ds", 1, "b", ["latest", "best"])),
        ],
    )
    use = {"name": "ds", "version": 0, "digest": sha("a"), "alias": None}
    write(tmp_path, "user", [("artifact_use", use)])
    path = build(tmp_path)
    rows = query(
        path,
        "SELECT name, type, version, digest, manifest, size, files, aliases, metadata, run_id "
        "FROM artifact_versions ORDER BY version",
    )
    assert [(*row[:8], json.loads(row[8]), row[9]) for row in rows] == [
        ("ds", "dataset", 0, sha("a"), sha("manifest a"), 100, 2, ["latest"], {"rows": 0}, "maker"),
        (
            "ds",
            "dataset",
            1,
            sha("b"),
            sha("manifest b"),
            101,
            2,
            ["latest", "best"],
            {"rows": 1},
            "maker",
        ),
    ]
    assert query(path, "SELECT name, version, digest, alias, run_id FROM artifact_uses") == [
        ("ds", 0, sha("a"), None, "user")
    ]
    assert query(path, "SELECT count(*) FROM quarantine") == [(0,)]

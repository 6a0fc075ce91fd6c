"""End to end in a real process: a script logs images, histograms, a table with image
cells, a saved file, two artifact versions and a ``use_artifact``; then the log is read
back with the JSON Schemas and every blob it names (directly, in a table or in a
manifest) exists and hashes to its name."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

from tests.helpers import (
    assert_valid_by_schemas,
    child_env,
    of_type,
    raw_log,
    read_events,
    run_script,
)

SCRIPT = """
import sys
from pathlib import Path

import numpy as np
import waddle

run = waddle.init(project="media-e2e", config={"lr": 0.1})
rng = np.random.default_rng(0)
for step in range(3):
    pixels = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    run.log({
        "loss": 1.0 / (step + 1),
        "sample": waddle.Image(pixels, caption=f"s{step}"),
        "grid": [waddle.Image(rng.random((8, 8))) for _ in range(2)],
        "weights": waddle.Histogram(rng.normal(size=500), num_bins=16),
    })
table = waddle.Table(columns=["id", "input", "label"])
for i in range(3):
    table.add_data(i, waddle.Image(np.full((4, 4), i * 40, dtype=np.uint8)), f"class-{i}")
run.log({"predictions": table})
Path("checkpoint.pt").write_bytes(b"weights at the end")
run.save("checkpoint.pt")
for content in (b"version one", b"version two"):
    Path("data").mkdir(exist_ok=True)
    Path("data/train.bin").write_bytes(content)
    artifact = waddle.Artifact("train-set", "dataset", metadata={"bytes": len(content)})
    artifact.add_dir("data")
    artifact.add_reference("s3://bucket/raw.tar")
    run.log_artifact(artifact)
used = run.use_artifact("train-set:v0")
print(Path(used.download("restored"), "train.bin").read_bytes().decode())
run.finish()
"""


def named_blobs(value: Any) -> list[tuple[str, int]]:
    """Every (sha256, size) a logged value names, nested ones included."""
    if isinstance(value, list):
        return [found for item in value for found in named_blobs(item)]
    if isinstance(value, dict) and "sha256" in value:
        return [(value["sha256"], value["size"])]
    return []


def read_blob(root: Path, sha256: str, size: int) -> bytes:
    data = (root / "blobs" / sha256[:2] / sha256).read_bytes()
    assert hashlib.sha256(data).hexdigest() == sha256 and len(data) == size
    return data


def test_a_script_logging_every_kind_of_media_leaves_a_sound_log_and_blobs(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    root = tmp_path / "root"
    done = run_script(script, cwd=tmp_path, env=child_env(WADDLE_DIR=str(root)), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "version one"
    assert assert_valid_by_schemas(raw_log(root)) == len(read_events(root))
    events = read_events(root)
    checked = 0
    metrics = of_type(events, "metrics")
    assert [sorted(e["data"]) for e in metrics] == [["grid", "loss", "sample", "weights"]] * 3 + [
        ["predictions"]
    ]
    for event in metrics:
        for sha256, size in named_blobs(list(event["data"].values())):
            read_blob(root, sha256, size)
            checked += 1
    assert [e["data"]["sample"]["caption"] for e in metrics[:3]] == ["s0", "s1", "s2"]
    hist = metrics[0]["data"]["weights"]
    assert len(hist["bins"]) == 17 and sum(hist["counts"]) == 500
    table_value = metrics[3]["data"]["predictions"]
    table = orjson.loads(read_blob(root, table_value["sha256"], table_value["size"]))
    assert [row[2] for row in table["data"]] == ["class-0", "class-1", "class-2"]
    for sha256, size in named_blobs(table["data"]):
        read_blob(root, sha256, size)
        checked += 1
    (saved,) = of_type(events, "artifact")
    assert read_blob(root, saved["sha256"], saved["size"]) == b"weights at the end"
    versions = of_type(events, "artifact_version")
    assert [(v["name"], v["version"], v["files"]) for v in versions] == [
        ("train-set", 0, 1),
        ("train-set", 1, 1),
    ]
    contents = []
    for version in versions:
        manifest_path = root / "blobs" / version["manifest"][:2] / version["manifest"]
        manifest = orjson.loads(manifest_path.read_bytes())
        assert hashlib.sha256(manifest_path.read_bytes()).hexdigest() == version["manifest"]
        assert manifest["references"] == [{"path": "raw.tar", "uri": "s3://bucket/raw.tar"}]
        (entry,) = manifest["files"]
        contents.append(read_blob(root, entry["sha256"], entry["size"]))
    assert contents == [b"version one", b"version two"]
    (use,) = of_type(events, "artifact_use")
    assert (use["name"], use["version"], use["digest"]) == ("train-set", 0, versions[0]["digest"])
    assert checked == 3 * 3 + 1 + 3
    assert not list((root / "blobs" / "tmp").iterdir())

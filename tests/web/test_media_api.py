"""The media endpoints on a real server over a real DuckDB file."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

import waddle
from tests.consumers.logs import open_stream, run_fields
from tests.helpers import eventually
from waddle.paths import blobs_dir

from .conftest import Server, start_server, wait_for_run
from .wsclient import Received, collect, open_client, subscribe


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def place(root: Path, data: bytes) -> dict[str, Any]:
    digest = sha(data)
    folder = blobs_dir(root) / digest[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / digest).write_bytes(data)
    return {"sha256": digest, "size": len(data)}


def image(root: Path, name: str, caption: str | None = None) -> dict[str, Any]:
    ref = place(root, b"\x89PNG\r\n\x1a\n" + name.encode())
    return {"_type": "image", **ref, "format": "png", "width": 2, "height": 3, "caption": caption}


CELL_IMAGE: dict[str, Any] = {}
ROWS = 120


def table(root: Path, step: int) -> dict[str, Any]:
    cell = image(root, "cell")
    CELL_IMAGE.update(cell)
    data = [[i * (step + 1), f"label {i % 10}", cell if i == 7 else None] for i in range(ROWS)]
    body = json.dumps({"columns": ["score", "label", "picture"], "data": data}).encode()
    return {"_type": "table", **place(root, body), "format": "json"} | {
        "columns": ["score", "label", "picture"],
        "nrows": ROWS,
    }


def artifact_version(version: int, aliases: list[str]) -> dict[str, Any]:
    return {
        "name": "ds",
        "artifact_type": "dataset",
        "version": version,
        "digest": sha(f"v{version}".encode()),
        "manifest": sha(f"manifest {version}".encode()),
        "size": 10 * (version + 1),
        "files": version + 1,
        "aliases": aliases,
        "metadata": {"split": "train"},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("media") / "root"
    root.mkdir()
    writer = open_stream(root, "mrun")
    writer.append("run", run_fields("mrun"))
    for step in range(3):
        data: dict[str, Any] = {
            "loss": 1.0 / (step + 1),
            "eval/samples": [image(root, f"s{step}-{i}", f"sample {i}") for i in range(2)],
            "weights/fc1": {
                "_type": "histogram",
                "bins": [0.0, 1.0, 2.0],
                "counts": [step, step + 1],
            },
        }
        if step != 1:
            data["preds"] = table(root, step)
        writer.append("metrics", {"step": step, "data": data})
    saved = place(root, b"print('hello')\n")
    writer.append("artifact", {"name": "train.py", "kind": "code", "path": "train.py", **saved})
    for version, aliases in ((0, ["latest", "best"]), (1, ["latest"])):
        writer.append("artifact_version", artifact_version(version, aliases))
    writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    writer.close()
    user = open_stream(root, "urun")
    user.append("run", run_fields("urun"))
    user.append("artifact_use", {"name": "ds", "version": 0, "digest": sha(b"v0"), "alias": "best"})
    user.close()
    server = start_server(root)
    wait_for_run(server, "mrun")
    eventually(
        lambda: (
            server.get("/api/runs/urun/artifacts").status == 200
            and server.get_json("/api/runs/urun/artifacts")["used"] != []
        ),
        what="the artifact use",
    )
    yield server
    assert server.stop() == 0, server.stderr()


def test_the_media_keys_of_a_run(server: Server) -> None:
    assert server.get_json("/api/runs/mrun/media") == [
        {"key": "eval/samples", "kind": "image", "steps": 3, "last_step": 2},
        {"key": "preds", "kind": "table", "steps": 2, "last_step": 2},
        {"key": "weights/fc1", "kind": "histogram", "steps": 3, "last_step": 2},
    ]
    assert server.get("/api/runs/nosuchrun/media").status == 404


def test_images_of_a_key_by_step_with_slashes_in_the_key(server: Server) -> None:
    every = server.get_json("/api/runs/mrun/media/eval/samples")
    assert [(v["step"], v["idx"]) for v in every] == [(s, i) for s in range(3) for i in range(2)]
    one = server.get_json("/api/runs/mrun/media/eval%2Fsamples?step=1")
    assert [(v["step"], v["idx"], v["caption"]) for v in one] == [
        (1, 0, "sample 0"),
        (1, 1, "sample 1"),
    ]
    assert one[0]["sha256"] == sha(b"\x89PNG\r\n\x1a\ns1-0")
    assert {k: one[0][k] for k in ("kind", "format", "width", "height")} == {
        "kind": "image",
        "format": "png",
        "width": 2,
        "height": 3,
    }
    assert server.get(f"/blobs/{one[0]['sha256']}").body == b"\x89PNG\r\n\x1a\ns1-0"
    assert server.get_json("/api/runs/mrun/media/eval/samples?step=9") == []
    assert server.get("/api/runs/mrun/media/eval/samples?step=-1").status == 400


def test_histograms_over_steps(server: Server) -> None:
    assert server.get_json("/api/runs/mrun/histograms/weights/fc1") == [
        {"step": s, "bins": [0.0, 1.0, 2.0], "counts": [s, s + 1]} for s in range(3)
    ]


def test_a_table_is_paged_sorted_and_filtered_by_the_server(server: Server) -> None:
    latest = server.get_json("/api/runs/mrun/tables/preds?limit=5")
    assert latest["step"] == 2 and latest["total"] == ROWS
    assert latest["columns"] == ["score", "label", "picture"]
    assert len(latest["rows"]) == 5
    first = server.get_json("/api/runs/mrun/tables/preds?step=0&sort=score&desc=true&limit=3")
    assert [row[0] for row in first["rows"]] == [119, 118, 117] and first["step"] == 0
    # Numbers sort as numbers (9 before 10), not as text.
    ascending = server.get_json("/api/runs/mrun/tables/preds?step=0&sort=score&offset=8&limit=3")
    assert [row[0] for row in ascending["rows"]] == [8, 9, 10]
    found = server.get_json("/api/runs/mrun/tables/preds?step=0&q=LABEL%207&sort=score")
    assert found["total"] == 12 and [row[0] for row in found["rows"]][:3] == [7, 17, 27]
    assert found["rows"][0][2] == CELL_IMAGE
    past = server.get_json("/api/runs/mrun/tables/preds?step=0&offset=500")
    assert past["rows"] == [] and past["total"] == ROWS
    assert server.get("/api/runs/mrun/tables/preds?step=1").status == 404
    assert server.get("/api/runs/mrun/tables/preds?sort=nope").status == 400
    assert server.get(f"/api/runs/mrun/tables/{quote('no table')}").status == 404


def test_the_files_of_a_run(server: Server) -> None:
    body = server.get_json("/api/runs/mrun/artifacts")
    assert [(f["kind"], f["name"], f["sha256"]) for f in body["files"]] == [
        ("code", "train.py", sha(b"print('hello')\n"))
    ]
    assert [(v["name"], v["type"], v["version"], v["aliases"]) for v in body["logged"]] == [
        ("ds", "dataset", 0, ["latest", "best"]),
        ("ds", "dataset", 1, ["latest"]),
    ]
    assert body["used"] == []
    used = server.get_json("/api/runs/urun/artifacts")["used"]
    assert [{k: v for k, v in u.items() if k != "ts"} for u in used] == [
        {"name": "ds", "version": 0, "alias": "best"}
    ]
    assert all(type(row["ts"]) is float for row in [*body["logged"], *used])
    assert server.get("/api/artifacts/never-logged").status == 404


def test_the_lineage_of_an_artifact(server: Server) -> None:
    found = server.get_json("/api/artifacts/ds")
    assert found["name"] == "ds" and found["type"] == "dataset"
    assert found["versions"] == [
        {
            "version": 0,
            "digest": sha(b"v0"),
            "aliases": ["best"],  # latest moved on to version 1
            "size": 10,
            "files": 1,
            "run_id": "mrun",
            "used_by": ["urun"],
            "metadata": {"split": "train"},
        },
        {
            "version": 1,
            "digest": sha(b"v1"),
            "aliases": ["latest"],
            "size": 20,
            "files": 2,
            "run_id": "mrun",
            "used_by": [],
            "metadata": {"split": "train"},
        },
    ]


def test_a_live_image_reaches_a_websocket_client_and_its_blob_is_served(serve: Any) -> None:
    live: Server = serve()
    pixels = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)

    def produce() -> None:
        run = waddle.init(project="livemedia", root=live.root, id="wsmedia", system_metrics=False)
        run.log({"loss": 0.5, "img": waddle.Image(pixels, caption="live")})
        run.finish()

    async def scenario() -> Received:
        async with open_client(live.ws_url) as ws:
            await subscribe(ws, project="livemedia")
            producer = threading.Thread(target=produce)
            producer.start()
            try:
                return await collect(
                    ws,
                    lambda got: any(e["type"] == "finish" for e in got.events.get("wsmedia", [])),
                    timeout=60.0,
                )
            finally:
                producer.join(60.0)

    received = asyncio.run(scenario())
    (logged,) = [e for e in received.events["wsmedia"] if e["type"] == "metrics"]
    value = logged["data"]["img"]
    assert value["_type"] == "image" and value["caption"] == "live"
    assert (value["width"], value["height"], value["format"]) == (5, 4, "png")
    assert logged["data"]["loss"] == 0.5
    blob = live.get(f"/blobs/{value['sha256']}")
    assert blob.status == 200 and sha(blob.body) == value["sha256"]
    assert blob.headers["content-type"] == "image/png"

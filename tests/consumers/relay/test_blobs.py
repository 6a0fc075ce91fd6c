"""The relay sends blobs before the events that name them, to a real central host."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

import waddle
from tests.consumers.logs import open_stream, run_fields
from tests.consumers.relay.support import (
    Relay,
    central,
    clean_env,
    free_port,
    kill_under_load,
    last_seqs,
    log_events,
    reference_db,
    relayed,
)
from tests.web.conftest import Server
from waddle.blobs.store import BlobStore
from waddle.consumers.base import run_consumer
from waddle.consumers.relay import blobs as relay_blobs
from waddle.consumers.relay.consumer import RelayConsumer
from waddle.paths import blobs_dir, log_dir

TOKEN = "blob-relay-token"
# Real runs logging images, lists of images, histograms, tables with image cells and a
# saved file, slowly enough that the faults land while they log.
PRODUCER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import waddle

    root, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    live = []
    for r in range(runs):
        run = waddle.init(project="media", id=f"media{r}", root=root, system_metrics=False,
                          reinit="create_new")
        live.append(run)
    for step in range(steps):
        for r, run in enumerate(live):
            pixels = np.full((8, 8, 3), (step * 7 + r) % 256, dtype=np.uint8)
            pixels[0, 0] = (r, step % 256, step // 256)
            data = {
                "loss": 1.0 / (step + 1),
                "img": waddle.Image(pixels, caption=f"step {step}"),
                "pair": [waddle.Image(pixels[:4]), waddle.Image(pixels[:, :4])],
                "hist": waddle.Histogram(np_histogram=([step, 1], [0.0, 0.5, 1.0])),
            }
            if step % 10 == 0:
                data["table"] = waddle.Table(
                    columns=["i", "pic"], data=[[step, waddle.Image(pixels[:2, :2])]]
                )
            run.log(data, step=step)
        time.sleep(0.01)
    for run in live:
        run.finish()
    """
)


def producer(root: Path, runs: int, steps: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(root), str(runs), str(steps)],
        stderr=subprocess.PIPE,
        env=clean_env(),
    )


def blob_set(root: Path) -> dict[str, str]:
    """Every blob under ``root/blobs`` (temp files left out) with the hash of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in blobs_dir(root).glob("??/*")
        if path.is_file()
    }


MEDIA_COUNTS = """
SELECT run_id, key, kind, count(*), sum(hash(step, idx, sha256, size, width, height))
FROM media GROUP BY ALL ORDER BY ALL
"""
HISTOGRAM_COUNTS = """
SELECT run_id, key, count(*), sum(hash(step, bins, counts)) FROM histograms
GROUP BY ALL ORDER BY ALL
"""


def table_counts(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(MEDIA_COUNTS).fetchall(), con.execute(HISTOGRAM_COUNTS).fetchall()


@pytest.mark.slow
def test_a_relay_killed_twice_delivers_every_blob_and_event_once(tmp_path: Path) -> None:
    root = tmp_path / "machine"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load = producer(root, 3, 150)
    server = central(tmp_path / "central", port, TOKEN)
    relay = Relay(root, url, TOKEN)
    kill_under_load(
        load,
        relay,
        server,
        ("relay", "host", "relay"),
        lambda: 0.7,
        load_timeout=180,
        deliver_timeout=120,
    )
    local = blob_set(root)
    assert len(local) > 3 * 150  # every step's images are distinct
    assert all(name == digest for name, digest in local.items())
    assert blob_set(server.root) == local
    assert log_events(server.root) == log_events(root)
    expected = table_counts(reference_db(root, tmp_path / "reference.duckdb"))
    assert table_counts(server.root / "waddle.duckdb") == expected
    media, histograms = expected
    assert {key for _, key, *_ in media} == {"img", "pair", "table"}
    assert sum(count for _, key, _, count, _ in media if key == "pair") == 3 * 150 * 2
    assert sum(count for *_, count, _ in histograms) == 3 * 150


# -- one relay round in this process, against a real host --------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Any:
    server = central(tmp_path / "central", free_port(), TOKEN)
    yield server
    server.stop()


def image_value(store: BlobStore, data: bytes) -> dict[str, Any]:
    ref = store.put_bytes(data)
    return {"_type": "image", "sha256": ref.sha256, "size": ref.size, "format": "png"}


def write_stream(root: Path, run_id: str, values: list[dict[str, Any]]) -> None:
    writer = open_stream(root, run_id)
    writer.append("run", run_fields(run_id))
    for step, value in enumerate(values):
        writer.append("metrics", {"step": step, "data": {"img": value}})
    writer.close()


def relay_once(root: Path, url: str) -> RelayConsumer:
    relay = RelayConsumer(root, url, token=TOKEN, linger=0, give_up_after=30)
    run_consumer(relay, root, threading.Event(), once=True)
    return relay


def test_a_blob_the_host_found_damaged_is_sent_again_from_disk(
    tmp_path: Path, host: Server, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    root = tmp_path / "machine"
    store = BlobStore(root)
    value = image_value(store, b"\x89PNG\r\n\x1a\nthe real bytes")
    write_stream(root, "damaged", [value])
    exchange = relay_blobs.BlobClient._exchange
    tampered: list[str] = []

    def damaging(self: Any, method: str, target: str, path: Path | None) -> Any:
        if method == "PUT" and not tampered:  # the first upload arrives damaged
            tampered.append(target)
            bad = tmp_path / "bad"
            bad.write_bytes(b"bytes damaged on the way")
            return exchange(self, method, target, bad)
        return exchange(self, method, target, path)

    monkeypatch.setattr(relay_blobs.BlobClient, "_exchange", damaging)
    with caplog.at_level(logging.WARNING, "waddle.relay"):
        relay = relay_once(root, host.url)
    assert tampered and not relay.parked and relay.failure is None
    assert "sending it again" in caplog.text
    assert blob_set(host.root) == blob_set(root)
    assert relayed(root, host.url) == last_seqs(root)


def test_a_blob_missing_locally_parks_its_stream_and_the_others_go_on(
    tmp_path: Path, host: Server
) -> None:
    root = tmp_path / "machine"
    store = BlobStore(root)
    kept = image_value(store, b"\x89PNG\r\n\x1a\nkept")
    lost = image_value(store, b"\x89PNG\r\n\x1a\nlost")
    write_stream(root, "whole", [kept])
    write_stream(root, "broken", [kept, lost, kept])
    store.path(lost["sha256"]).unlink()
    relay = relay_once(root, host.url)
    assert set(relay.parked) == {"broken"}
    reason = relay.parked["broken"]
    assert lost["sha256"] in reason and "seq 2" in reason and "is not in" in reason
    committed = relayed(root, host.url)
    assert committed["whole"] == last_seqs(root)["whole"]
    assert committed.get("broken", -1) < 2  # nothing past the event without its blob
    assert set(blob_set(host.root)) == {kept["sha256"]}


def test_a_blob_damaged_locally_is_not_sent(tmp_path: Path, host: Server) -> None:
    root = tmp_path / "machine"
    store = BlobStore(root)
    value = image_value(store, b"\x89PNG\r\n\x1a\noriginal")
    write_stream(root, "rotten", [value])
    store.path(value["sha256"]).write_bytes(b"bit rot")
    relay = relay_once(root, host.url)
    assert "is damaged in" in relay.parked["rotten"]
    assert blob_set(host.root) == {}


def test_an_artifact_version_brings_its_manifest_and_files(tmp_path: Path, host: Server) -> None:
    root = tmp_path / "machine"
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("first file")
    (data / "b.bin").write_bytes(bytes(range(256)))
    run = waddle.init(project="arts", root=root, id="artrun", system_metrics=False)
    artifact = waddle.Artifact("ds", type="dataset")
    artifact.add_dir(str(data))
    run.log_artifact(artifact)
    run.finish()
    relay = relay_once(root, host.url)
    assert not relay.parked and relay.failure is None
    local = blob_set(root)
    files = {hashlib.sha256(p.read_bytes()).hexdigest() for p in data.iterdir()}
    assert files < set(local)  # the files, and the manifest naming them
    assert blob_set(host.root) == local


def test_a_blob_named_through_an_escaped_key_is_still_sent(tmp_path: Path, host: Server) -> None:
    # Lines without the word "sha256" skip the walk for blobs; a key spelled with \u
    # escapes names a blob all the same, so such lines are walked.
    root = tmp_path / "machine"
    value = image_value(BlobStore(root), b"\x89PNG\r\n\x1a\nescaped")
    write_stream(root, "escaped", [])
    line = orjson.dumps({"seq": 1, "ts": 1.0, "type": "metrics", "step": 0, "data": {"img": value}})
    line = line.replace(b'"sha256"', b'"sha\\u0032\\u00356"')
    assert b"sha256" not in line and orjson.loads(line)["data"]["img"] == value
    (segment,) = (log_dir(root) / "escaped").glob("*.ndjson")
    with open(segment, "ab") as handle:
        handle.write(line + b"\n")
    relay = relay_once(root, host.url)
    assert not relay.parked and relay.failure is None
    assert set(blob_set(host.root)) == {value["sha256"]}
    assert relayed(root, host.url) == {"escaped": 1}


def test_only_lines_that_may_name_a_blob_are_walked() -> None:
    plain = b'{"seq":3,"ts":1.0,"type":"metrics","step":2,"data":{"loss":0.5}}\n'
    named = plain.replace(b'{"loss":0.5}', b'{"img":{"_type":"image","sha256":"ab"}}')
    assert not relay_blobs.may_name_blobs(plain * 3)
    assert relay_blobs.may_name_blobs(plain + named)
    assert relay_blobs.may_name_blobs(plain.replace(b"loss", b"\\u006coss"))

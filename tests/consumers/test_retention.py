"""``waddle gc``: sealed segments go once every registered durable consumer, running or
not, has committed past them, and nothing else ever goes, however many stores a folder
feeds."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.consumers.logs import (
    CONSUME,
    numbers,
    open_stream,
    read_all,
    read_tables,
    run_fields,
    segments,
    write_run,
)
from tests.helpers import eventually
from waddle.blobs.store import BlobStore
from waddle.cli import commands
from waddle.consumers import retention
from waddle.consumers.base import Consumer, Offsets, run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.lag import segment_sizes
from waddle.consumers.registry import StateStore
from waddle.consumers.retention import collect, passed
from waddle.eventlog.reader import Batch, Offset
from waddle.eventlog.segment import list_segments, log_dir
from waddle.paths import blobs_dir


class Collector(Consumer):
    """A durable consumer that resumes from its published offsets and keeps the seqs."""

    durable = True

    def __init__(self, name: str) -> None:
        self.name = name
        self.seqs: dict[str, list[int]] = {}

    def handle(self, batches: list[Batch]) -> None:
        for batch in batches:
            self.seqs.setdefault(batch.stream, []).extend(e["seq"] for e in self.fresh(batch))

    def commit(self) -> Offsets:
        return dict(self.taken)


def log_with_segments(root: Path) -> None:
    write_run(root, "a", 400, segment_bytes=2048)
    write_run(root, "b", 200, segment_bytes=1024)


def offset_inside(root: Path, stream: str, batches: int) -> Offset:
    """Where a consumer stands after ``batches`` reads of 4 KiB."""
    return read_all(root, stream)[batches - 1].offset


def test_without_registered_consumers_nothing_is_deleted(tmp_path: Path) -> None:
    root = tmp_path / "w"
    log_with_segments(root)
    before = sorted(root.glob("log/*/*.ndjson"))
    result = collect(root)
    assert result.freed == [] and "no registered consumer" in result.note
    assert sorted(root.glob("log/*/*.ndjson")) == before


def test_a_stopped_consumer_holds_what_it_has_not_taken(tmp_path: Path) -> None:
    root = tmp_path / "w"
    log_with_segments(root)
    registry = StateStore(root)
    slow = offset_inside(root, "a", 3)
    registry.publish("slow", {"a": slow})
    registry.publish("fast", {"a": read_all(root, "a")[-1].offset, "b": Offset(10**6, 0, 10**6)})
    a_before, b_before = segments(root, "a"), segments(root, "b")
    sizes = {p: p.stat().st_size for p in a_before}
    result = collect(root)
    gone = {item.path for item in result.freed}
    assert gone == {p for p in a_before[:-1] if passed(slow, int(p.name[:20]), sizes[p])}
    assert gone and segments(root, "b") == b_before
    collector = Collector("slow")
    run_consumer(collector, root, threading.Event(), once=True)
    last = read_all(root, "a")[-1].offset.seq
    assert collector.seqs["a"] == list(range(slow.seq + 1, last + 1))
    assert collector.seqs["b"][0] == 0


def test_the_active_segment_is_never_deleted(tmp_path: Path) -> None:
    root = tmp_path / "w"
    log_with_segments(root)
    done = {s: read_all(root, s)[-1].offset for s in ("a", "b")}
    StateStore(root).publish("all", done)
    result = collect(root)
    assert {s: [p.name for p in segments(root, s)] for s in ("a", "b")} == {
        s: [f"{list_segments(log_dir(root) / s)[-1]:020d}.ndjson"] for s in ("a", "b")
    }
    assert result.bytes > 0


def test_dry_run_and_removal(tmp_path: Path) -> None:
    root = tmp_path / "w"
    log_with_segments(root)
    registry = StateStore(root)
    registry.publish("done", {s: read_all(root, s)[-1].offset for s in ("a", "b")})
    registry.publish("offline", {})
    before = sorted(root.glob("log/*/*.ndjson"))
    assert collect(root, dry_run=True).freed == []
    assert collect(root).freed == []
    assert registry.remove("offline")
    would = collect(root, dry_run=True).freed
    assert would and sorted(root.glob("log/*/*.ndjson")) == before
    assert collect(root).freed == would


def test_a_running_daemon_and_a_stopped_consumer_both_hold(tmp_path: Path) -> None:
    root = tmp_path / "w"
    log_with_segments(root)
    held = offset_inside(root, "b", 2)
    StateStore(root).publish("offline", {"b": held})
    daemon = subprocess.Popen(
        [*CONSUME, "--dir", str(root), "--interval", "0.02"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        eventually(lambda: StateStore(root).load("duckdb").get("a", Offset()).seq >= 402)
        result = collect(root)
        assert result.consumers == ["duckdb", "offline"]
        assert {item.stream for item in result.freed} == {"b"}
        write_run(root, "late", 50, segment_bytes=512)
        eventually(lambda: StateStore(root).load("duckdb").get("late", Offset()).seq >= 52)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    collector = Collector("offline")
    run_consumer(collector, root, threading.Event(), once=True)
    assert collector.seqs["b"] == list(range(held.seq + 1, 203))
    tables = read_tables(root / "waddle.duckdb")
    assert len(tables["metrics"]) == 3 * (400 + 200 + 50)


def test_a_second_store_never_lets_gc_delete_what_the_first_has_not_read(
    tmp_path: Path,
) -> None:
    root = tmp_path / "w"
    stream = open_stream(root, "r", segment_bytes=2048)
    stream.append("run", run_fields("r"))
    for step in range(100):
        stream.append("metrics", {"step": step, "data": numbers(step)})
    main = DuckDBWriter(root)
    held = run_consumer(main, root, threading.Event(), once=True)["r"]
    for step in range(100, 1000):
        stream.append("metrics", {"step": step, "data": numbers(step)})
    stream.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    stream.close()
    other = DuckDBWriter(root, tmp_path / "elsewhere" / "other.duckdb")
    run_consumer(other, root, threading.Event(), once=True)
    kept = [int(p.name[:20]) for p in segments(root, "r")]
    assert kept[0] < held.segment < kept[-1], "the test needs segments on both sides"

    freed = collect(root).freed
    assert freed and all(int(item.path.name[:20]) < held.segment for item in freed)
    assert [int(p.name[:20]) for p in segments(root, "r")] == [k for k in kept if k >= held.segment]
    run_consumer(DuckDBWriter(root), root, threading.Event(), once=True)
    tables = read_tables(root / "waddle.duckdb")
    assert len(tables["metrics"]) == 3 * 1000
    assert tables == read_tables(tmp_path / "elsewhere" / "other.duckdb")

    assert main.name == "duckdb" and other.name.startswith("duckdb-")
    assert {r.name for r in StateStore(root).registered()} == {"duckdb", other.name}
    listing = io.StringIO()
    commands.consumers(root, listing)
    names = re.findall(r"^(\S+)  \(not running", listing.getvalue(), re.M)
    assert sorted(names) == sorted(["duckdb", other.name])


def test_passed() -> None:
    assert not passed(None, 0, 10)
    assert not passed(Offset(0, 9, 5), 0, 10)
    assert passed(Offset(0, 10, 5), 0, 10)
    assert passed(Offset(7, 0, 6), 0, 10)
    assert not passed(Offset(0, 10, 5), 7, 10)


@settings(max_examples=25, deadline=None)
@given(
    steps=st.lists(st.integers(1, 60), min_size=1, max_size=3),
    cuts=st.lists(st.lists(st.integers(0, 40), max_size=3), min_size=1, max_size=3),
)
def test_gc_deletes_exactly_the_segments_everyone_passed(
    steps: list[int], cuts: list[list[int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "w"
        streams = [write_run(root, f"s{i}", n, segment_bytes=300) for i, n in enumerate(steps)]
        reads = {s: read_all(root, s) for s in streams}
        registry = StateStore(root)
        positions: list[dict[str, Offset]] = []
        for index, consumer_cuts in enumerate(cuts):
            offsets = {
                stream: reads[stream][min(cut, len(reads[stream]) - 1)].offset
                for stream, cut in zip(streams, consumer_cuts, strict=False)
            }
            registry.publish(f"c{index}", offsets)
            positions.append(offsets)
        sizes = {s: segment_sizes(log_dir(root) / s) for s in streams}
        expected: set[Any] = set()
        for stream in streams:
            for first in list(sizes[stream])[:-1]:
                if not all(passed(p.get(stream), first, sizes[stream][first]) for p in positions):
                    break
                expected.add((stream, first))
        freed = {(item.stream, int(item.path.name[:20])) for item in collect(root).freed}
        assert freed == expected
        for stream in streams:
            kept = list_segments(log_dir(root) / stream)
            for offsets in positions:
                # every event a consumer has not taken is still on disk
                mine = offsets.get(stream, Offset())
                remaining = [e["seq"] for b in read_all(root, stream, mine) for e in b.events]
                last = reads[stream][-1].offset.seq
                assert remaining == list(range(mine.seq + 1, last + 1))
            assert kept, "a stream keeps its active segment"


# -- blobs: kept while a retained event names them -----------------------------------------


def old(*paths: Path) -> None:
    """Age files past the blob grace period."""
    when = time.time() - retention.BLOB_GRACE_S - 60
    for path in paths:
        os.utime(path, (when, when))


def blob_log(root: Path) -> dict[str, str]:
    """Stream ``m``: an image early (in a segment that seals), filler, then a table whose
    cell is an image, and an artifact index naming a manifest that names a file."""
    store = BlobStore(root)
    names = {
        label: store.put_bytes(f"{label} bytes".encode()).sha256
        for label in ("early", "late", "cell", "orphan", "file")
    }
    cell = {"_type": "image", "sha256": names["cell"], "size": 10, "format": "png"}
    table = json.dumps({"columns": ["pic"], "data": [[cell]]}).encode()
    names["table"] = store.put_bytes(table).sha256
    manifest = json.dumps({"name": "ds", "files": [{"path": "x", "sha256": names["file"]}]})
    names["manifest"] = store.put_bytes(manifest.encode()).sha256
    index = root / "artifacts" / "ds.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"versions": [{"version": 0, "manifest": names["manifest"]}]}))
    writer = open_stream(root, "m", segment_bytes=1024)
    writer.append("run", run_fields("m"))
    image = {"_type": "image", "sha256": names["early"], "size": 11, "format": "png"}
    writer.append("metrics", {"step": 0, "data": {"img": image}})
    for step in range(1, 60):
        writer.append("metrics", {"step": step, "data": numbers(step)})
    late = {"img": {**image, "sha256": names["late"]}}
    late["preds"] = {"_type": "table", "sha256": names["table"], "size": 1, "format": "json"}
    writer.append("metrics", {"step": 60, "data": late})
    writer.close()
    old(*(store.path(name) for name in names.values()))
    return names


def test_a_blob_goes_only_when_no_retained_event_names_it(tmp_path: Path) -> None:
    root = tmp_path / "w"
    names = blob_log(root)
    store = BlobStore(root)
    StateStore(root).publish("all", {"m": read_all(root, "m")[-1].offset})
    would = collect(root, dry_run=True)
    assert {item.path.name for item in would.blobs} == {names["early"], names["orphan"]}
    assert all(store.exists(name) for name in names.values())  # a dry run deletes nothing
    result = collect(root)
    assert result.freed and {item.path for item in result.blobs} == {
        store.path(names["early"]),
        store.path(names["orphan"]),
    }
    assert {label for label, name in names.items() if store.exists(name)} == {
        "late",
        "table",
        "cell",
        "manifest",
        "file",
    }
    out = io.StringIO()
    commands.gc(root, out)
    assert "0 blobs" in out.getvalue()


def test_a_consumer_that_still_needs_an_event_keeps_its_blob(tmp_path: Path) -> None:
    root = tmp_path / "w"
    names = blob_log(root)
    store = BlobStore(root)
    registry = StateStore(root)
    registry.publish("all", {"m": read_all(root, "m")[-1].offset})
    registry.publish("behind", {"m": Offset(0, 0, 0)})  # has not read the early image yet
    result = collect(root)
    assert result.freed == []
    assert {item.path.name for item in result.blobs} == {names["orphan"]}
    assert store.exists(names["early"])
    registry.remove("behind")
    assert store.path(names["early"]) in {item.path for item in collect(root).blobs}


def test_new_blobs_and_fresh_temp_files_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "w"
    blob_log(root)
    store = BlobStore(root)
    StateStore(root).publish("all", {"m": read_all(root, "m")[-1].offset})
    fresh = store.put_bytes(b"written a moment ago; its event may be on its way").sha256
    tmp = blobs_dir(root) / "tmp"
    stale, live = tmp / "in-stale", tmp / "in-live"
    stale.write_bytes(b"a writer was killed")
    live.write_bytes(b"a writer is writing")
    when = time.time() - retention.TMP_AGE_S - 60
    os.utime(stale, (when, when))
    gone = {item.path for item in collect(root).blobs}
    assert stale in gone and live not in gone and store.path(fresh) not in gone
    assert store.exists(fresh) and live.exists() and not stale.exists()

"""Hostile input, run by every consumer (next to the conformance suite): the five poison
events of issue 10, each of which was accepted and then stopped the DuckDB writer for
good (and with it every read endpoint), or killed every log reader.

They are written straight into segments, as an older Waddle or a foreign producer could
have written them (today's producer and /ingest refuse them). Every consumer must go on
and handle the good events after them: the DuckDB writer and the memory consumer store
them and quarantine the poison, the broadcaster sends them. The relay forwards every
stream whole: a host takes a stream only without gaps, so each bad line its reader
skipped goes as a ``skipped`` placeholder, which the host's DuckDB writer quarantines.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from tests.consumers.live import broadcast_while
from tests.consumers.logs import CONSUME, run_fields
from tests.consumers.relay.support import central, clean_env, free_port, stream_events
from tests.helpers import SUBPROCESS_TIMEOUT_S, eventually
from waddle.blobs.store import BlobStore
from waddle.cli import commands
from waddle.consumers.base import run_consumer
from waddle.consumers.broadcast import Chunk
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.memory import MemoryConsumer
from waddle.consumers.quarantine import published_count
from waddle.consumers.relay.client import Backoff
from waddle.consumers.relay.consumer import RelayConsumer
from waddle.eventlog.segment import log_dir, segment_name
from waddle.ids import run_id_of_stream

PROJECT = "hostile"
TS = 1_700_000_000.0


def line(seq: int, kind: str, /, **fields: Any) -> bytes:
    return orjson.dumps({"seq": seq, "ts": TS + seq, "type": kind, **fields}) + b"\n"


def run_line(seq: int, run_id: str, *, resumed: bool = False) -> bytes:
    return line(seq, "run", **{**run_fields(run_id, project=PROJECT, resumed=resumed)})


def metrics_line(seq: int, value: bytes = b"0.5") -> bytes:
    head = line(seq, "metrics", step=seq, data={"loss": 0})
    return head.replace(b'"loss":0', b'"loss":' + value)


def nested(levels: int, inner: bytes, opening: bytes, closing: bytes) -> bytes:
    return opening * levels + inner + closing * levels


def finish_line(seq: int, exit_code: int) -> bytes:
    return line(seq, "finish", exit_code=exit_code, status="failed" if exit_code else "finished")


# The file an artifact event names; a relay sends it before the event (the blob is real).
ARTIFACT_BYTES = b"m.pt bytes"
ARTIFACT_SHA256 = hashlib.sha256(ARTIFACT_BYTES).hexdigest()


def artifact_line(seq: int, size: int) -> bytes:
    return line(
        seq, "artifact", name="m", kind="model", path="m.pt", size=size, sha256=ARTIFACT_SHA256
    )


# stream -> its lines, in seq order; POISON: stream -> the seqs no reader may take.
HOSTILE: dict[str, list[bytes]] = {
    "exitcode": [
        run_line(0, "exitcode"),
        metrics_line(1),
        finish_line(2, 2**40),  # fits the (now BIGINT) column: stored
        run_line(3, "exitcode", resumed=True),
        metrics_line(4),
        finish_line(5, 2**64 - 1),  # no 64-bit column holds it
        run_line(6, "exitcode", resumed=True),
        metrics_line(7),
        finish_line(8, 0),
    ],
    "x.99999999999": [metrics_line(seq) for seq in range(5)],  # the suffix overflowed the rank
    "size": [
        run_line(0, "size"),
        metrics_line(1),
        artifact_line(2, 2**63 + 5),
        metrics_line(3),
        artifact_line(4, 10),
        finish_line(5, 0),
    ],
    "lists": [
        run_line(0, "lists"),
        metrics_line(1),
        metrics_line(2, nested(300, b"1", b"[", b"]")),
        metrics_line(3),
        finish_line(4, 0),
    ],
    "dicts": [
        run_line(0, "dicts"),
        metrics_line(1),
        metrics_line(2, nested(990, b'"NaN"', b'{"k":', b"}")),
        metrics_line(3, b'"NaN"'),
        finish_line(4, 0),
    ],
    # A stream written after them all.
    "after": [run_line(0, "after"), *map(metrics_line, range(1, 21)), finish_line(21, 0)],
}
POISON = {"exitcode": [5], "size": [2], "lists": [2], "dicts": [2]}
GOOD = {
    stream: [seq for seq in range(len(lines)) if seq not in POISON.get(stream, [])]
    for stream, lines in HOSTILE.items()
}


def write_hostile(root: Path) -> None:
    for stream, lines in HOSTILE.items():
        folder = log_dir(root) / stream
        folder.mkdir(parents=True)
        (folder / segment_name(0)).write_bytes(b"".join(lines))
    BlobStore(root).put_bytes(ARTIFACT_BYTES)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    write_hostile(root)
    return root


# -- each consumer over the hostile log --------------------------------------------------


def by_duckdb(root: Path, tmp_path: Path) -> dict[str, list[int]]:
    path = tmp_path / "hostile.duckdb"
    run_consumer(DuckDBWriter(root, path, snapshot_interval=0), root, threading.Event(), once=True)
    with duckdb.connect(str(path), read_only=True) as con:
        stored = dict(
            con.execute(
                "SELECT stream, list(seq ORDER BY seq) FROM ("
                " SELECT s.stream, m.step AS seq FROM metrics m"
                " JOIN streams s ON s.run_id = m.run_id"
                ") GROUP BY stream"
            ).fetchall()
        )
        set_aside = con.execute("SELECT stream, seq FROM quarantine ORDER BY ALL").fetchall()
    assert sorted(set_aside) == sorted((s, q) for s, seqs in POISON.items() for q in seqs)
    return stored  # steps equal seqs here: the metrics events stored


def by_memory(root: Path, tmp_path: Path) -> dict[str, list[int]]:
    consumer = MemoryConsumer(root=root)
    run_consumer(consumer, root, threading.Event(), once=True)
    set_aside = sorted((r.stream, r.seq) for r in consumer.store.quarantine)
    assert set_aside == sorted((s, q) for s, seqs in POISON.items() for q in seqs)
    return {s: [e["seq"] for e in events] for s, events in consumer.store.events.items()}


def by_broadcaster(root: Path, tmp_path: Path) -> dict[str, list[int]]:
    """A subscribed client of a live broadcaster while the hostile log is written."""
    received: dict[str, list[int]] = {}
    tail = root.parent / "live"
    (tail / "log").mkdir(parents=True)

    def take(chunk: Chunk) -> None:
        received.setdefault(chunk.stream, []).extend(e["seq"] for e in chunk.events)

    def done() -> bool:
        return all(received.get(s, [None])[-1] == seqs[-1] for s, seqs in GOOD.items())

    broadcast_while(
        tail,
        lambda: write_hostile(tail),
        take,
        done,
        projects=[PROJECT],
        runs=["x.99999999999"],
        polls=3000,
    )
    return received


def by_relay(root: Path, tmp_path: Path) -> dict[str, list[int]]:
    host = central(tmp_path / "central", free_port())
    try:
        relay = RelayConsumer(root, host.url, backoff=Backoff(base=0.02, cap=0.2))
        run_consumer(relay, root, threading.Event(), once=True)
        assert relay.failure is None and relay.parked == {}
        held = {s: stream_events(host.root, s) for s in GOOD}
        skipped = {
            s: [e["seq"] for e in events if e["type"] == "skipped"] for s, events in held.items()
        }
        assert {s: seqs for s, seqs in skipped.items() if seqs} == POISON
        quarantined = sum(map(len, POISON.values()))
        eventually(lambda: host.get_json("/info")["quarantined"] == quarantined, what="the host")
        return {
            s: [e["seq"] for e in events if e["type"] != "skipped"] for s, events in held.items()
        }
    finally:
        assert host.stop() == 0, host.stderr()


def metrics_of(good: dict[str, list[int]]) -> dict[str, list[int]]:
    """The DuckDB writer is observed through its metrics rows: the metrics events."""
    return {
        s: [q for q in seqs if b'"type":"metrics"' in HOSTILE[s][q]] for s, seqs in good.items()
    }


Observed = Callable[[Path, Path], dict[str, list[int]]]
Expected = Callable[[dict[str, list[int]]], dict[str, list[int]]]
KINDS: dict[str, tuple[Observed, Expected]] = {
    "duckdb": (by_duckdb, metrics_of),
    "memory": (by_memory, lambda good: good),
    "broadcast": (by_broadcaster, lambda good: good),
    "relay": (by_relay, lambda good: good),  # the poison as placeholders (by_relay)
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_consumer_survives_the_poison_and_handles_what_follows(
    kind: str, root: Path, tmp_path: Path
) -> None:
    consume, expect = KINDS[kind]
    handled = consume(root, tmp_path)
    assert {s: handled.get(s, []) for s in GOOD} == expect(GOOD)


def test_the_duckdb_tables_after_the_poison(root: Path, tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    for _ in range(2):  # and a restart changes nothing
        writer = DuckDBWriter(root, path)
        run_consumer(writer, root, threading.Event(), once=True)
    with duckdb.connect(str(path), read_only=True) as con:
        runs = dict(con.execute("SELECT run_id, (status, exit_code) FROM runs").fetchall())
        streams = con.execute("SELECT stream, run_id, rank FROM streams ORDER BY ALL").fetchall()
        artifacts = con.execute("SELECT run_id, size FROM artifacts").fetchall()
        (nan,) = con.execute(
            "SELECT value FROM metrics WHERE run_id = 'dicts' AND step = 3"
        ).fetchone()
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()
    assert runs["exitcode"] == ("finished", 0)
    assert runs["size"] == runs["lists"] == runs["dicts"] == ("finished", 0)
    assert ("x.99999999999", "x.99999999999", 0) in streams
    assert run_id_of_stream("x.99999999999") == "x.99999999999"
    assert artifacts == [("size", 10)]
    assert nan != nan  # the NaN after 990 nested dicts is still a NaN
    assert quarantined == (4,)
    assert published_count(root, writer.name) == 4
    out = io.StringIO()
    commands.consumers(root, out)
    assert "4 quarantined" in out.getvalue()


def test_a_server_over_the_poison_keeps_answering(root: Path, tmp_path: Path) -> None:
    """``waddle serve`` on the hostile log: its writer goes on, no read answers 500."""
    host = central(root, free_port())
    try:

        def caught_up() -> Any:
            info = host.get_json("/info")
            runs = {r["run_id"] for r in host.get_json("/runs")["runs"]}
            return info["quarantined"] == 4 and runs == set(GOOD) and info

        info = eventually(caught_up, what="the tables of the whole log")
        assert sorted(p["name"] or "" for p in info["projects"]) == ["", PROJECT]
        for run_id, seqs in GOOD.items():
            page = host.get_json(f"/run/{run_id}")
            assert page["run"]["run_id"] == run_id
            assert [e["seq"] for e in page["events"]] == seqs
            assert host.get(f"/api/runs/{run_id}/metrics").status == 200
    finally:
        assert host.stop() == 0, host.stderr()


SCRIPT = """
import waddle
run = waddle.init(project="plain", id="plain", system_metrics=False)
run.log({"loss": 0.5})
run.finish(exit_code=2**31)
"""


def test_a_plain_script_finishing_with_exit_code_2_31_is_consumed(tmp_path: Path) -> None:
    """The issue's reproduction: this made ``waddle-consume`` exit 1 on every start."""
    root = tmp_path / "w"
    env = {**clean_env(), "WADDLE_DIR": str(root)}
    script = [sys.executable, "-c", textwrap.dedent(SCRIPT)]
    subprocess.run(script, env=env, check=True, timeout=SUBPROCESS_TIMEOUT_S, cwd=tmp_path)
    for _ in range(2):
        done = subprocess.run(
            [*CONSUME, "--dir", str(root), "--once"],
            env=env,
            capture_output=True,
            timeout=SUBPROCESS_TIMEOUT_S,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr.decode()
    with duckdb.connect(str(root / "waddle.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status, exit_code FROM runs").fetchall() == [("failed", 2**31)]
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (1,)

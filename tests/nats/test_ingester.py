"""Ingesting from JetStream: out-of-order and repeated messages of a stream (the ingester's
own logic, with stand-in messages), and exactly once across the whole path with real
processes: two producer folders, their relays, a broker restarted, two ingesters of which
one is SIGKILLed twice, and the Parquet lake both ingesters export to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.relay.support import (
    CONSUME,
    Relay,
    caught_up,
    checksums,
    clean_env,
    last_seqs,
    log_events,
    reference_db,
)
from tests.helpers import eventually
from tests.nats.conftest import NatsServer, call, produce, settle
from tests.nats.test_publisher import published
from tests.web.conftest import Server, start_server
from waddle.consumers.nats.broker import LEASES
from waddle.consumers.nats.windows import Window
from waddle.errors import WriteFailed
from waddle.eventlog.record import encode
from waddle.eventlog.segment import log_dir
from waddle.eventlog.writer import StreamWriter
from waddle.web.ingest_log import IngestLog
from waddle.web.nats_ingest import DEFAULT_FETCH
from waddle.web.nats_streams import Streams


class Message:
    """Stands in for a JetStream message: its payload (one event's line without its
    newline, as older relays sent it, or a window of lines), and what the ingester
    answered."""

    def __init__(self, *events: dict[str, Any]) -> None:
        lines = b"".join(encode(event) for event in events)
        self.data = lines[:-1] if len(events) == 1 else lines
        self.answers: list[str] = []

    async def ack(self) -> None:
        self.answers.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.answers.append("nak")

    async def in_progress(self) -> None:
        self.answers.append("wip")


def offline(log: IngestLog, **options: Any) -> Streams:
    """An ingester's streams without a broker: ``take`` alone, with no backfill to read."""
    taker = Streams(log, name="a", fetch=DEFAULT_FETCH, **options)

    async def no_backfill(stream: str, waiting: list[Any], held: int) -> None:
        return None

    taker._backfill = no_backfill  # type: ignore[method-assign]
    return taker


def one_stream(tmp_path: Path, name: str, *, steps: int) -> tuple[str, list[dict[str, Any]]]:
    """A producer's one stream of ``steps`` metrics, whole on disk: its id and events."""
    source = tmp_path / "producer"
    settle(produce(source, name, runs=1, steps=steps, chunk=steps, pause=0))
    ((stream, events),) = log_events(source).items()
    return stream, events


def test_a_stream_is_appended_in_seq_order_whatever_order_its_messages_come_in(
    tmp_path: Path,
) -> None:
    stream, logged = one_stream(tmp_path, "o", steps=3)
    events = logged[:5]  # the run event and metrics
    log = IngestLog(tmp_path / "ingester")
    ingester = offline(log)
    msgs = [Message(event) for event in events]

    def take(*seqs: int) -> None:
        asyncio.run(ingester.take(stream, [(seq, msgs[seq]) for seq in seqs]))

    take(3, 1)  # a gap before both: kept, unanswered, nothing written
    assert log.held(stream) == -1
    assert [m.answers for m in msgs] == [[]] * 5
    take(0)  # fills the gap: 0 and 1 are written and acknowledged, 3 still waits
    assert log.held(stream) == 1
    assert [m.answers for m in msgs] == [["ack"], ["ack"], [], [], []]
    take(2, 1, 4)  # 1 again (a redelivery): acknowledged, not written again
    log.close()
    assert [m.answers for m in msgs] == [["ack"], ["ack", "ack"], ["ack"], ["ack"], ["ack"]]
    assert ingester.taken == 5
    assert log_events(tmp_path / "ingester") == {stream: events}


def test_windows_published_again_with_other_boundaries_land_each_seq_once(
    tmp_path: Path,
) -> None:
    stream, logged = one_stream(tmp_path, "w", steps=8)
    events = logged[:10]
    log = IngestLog(tmp_path / "ingester")
    ingester = offline(log)
    # A relay published 0-3 and 4-9, crashed, and published again from 2 in other cuts.
    windows = {
        first: Message(*events[first : last + 1])
        for first, last in ((0, 3), (4, 9), (2, 6), (7, 8))
    }

    def take(*firsts: int) -> None:
        asyncio.run(ingester.take(stream, [(first, windows[first]) for first in firsts]))

    take(7, 2)  # past the gap at seq 0: kept
    assert log.held(stream) == -1 and all(not m.answers for m in windows.values())
    take(0)  # 0-3, then 4-6 from the window at 2, then 7-8: all three acknowledged
    assert log.held(stream) == 8
    assert {f: m.answers for f, m in windows.items()} == {0: ["ack"], 4: [], 2: ["ack"], 7: ["ack"]}
    take(4)  # only seq 9 is new
    take(2)  # a redelivery of what the log holds: acknowledged, nothing written
    log.close()
    assert windows[4].answers == ["ack"] and windows[2].answers == ["ack", "ack"]
    assert ingester.taken == 10
    assert log_events(tmp_path / "ingester") == {stream: events}


def test_a_backfill_refused_by_the_log_is_read_again_with_the_redelivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, events = one_stream(tmp_path, "f", steps=2)
    log = IngestLog(tmp_path / "ingester")
    ingester = offline(log)
    looked: list[int] = []

    async def from_broker(stream: str, waiting: list[Window], held: int) -> None:
        looked.append(held + 1)  # as the broker would: the seqs before the first waiting
        ingester._backfilled[stream] = held + 1
        waiting.append(Window.of(0, None, b"".join(map(encode, events[:2]))))

    ingester._backfill = from_broker  # type: ignore[method-assign]
    ingester._held[stream] = log.held(stream)  # looked up before the disk fills
    full = WriteFailed(stream, -1, "disk full")
    monkeypatch.setattr(log, "append", lambda *args: (_ for _ in ()).throw(full))
    late = Message(events[2])
    asyncio.run(ingester.take(stream, [(2, late)]))  # seqs 0-1 backfilled, then refused
    monkeypatch.undo()
    asyncio.run(ingester.take(stream, [(2, late)]))  # its redelivery: backfilled again
    log.close()
    assert looked == [0, 0] and late.answers == ["nak", "ack"]
    assert log_events(tmp_path / "ingester") == {stream: events[:3]}


def test_a_stream_held_at_a_gap_is_reported_once_and_keeps_at_most_hold_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stream, logged = one_stream(tmp_path, "g", steps=6)
    log = IngestLog(tmp_path / "ingester")
    # ack_wait 0: a stream still at its gap on the next look has waited long enough.
    ingester = offline(log, ack_wait=0.0, hold=2)
    msgs = [Message(event) for event in logged[:7]]

    def take(*seqs: int) -> None:
        asyncio.run(ingester.take(stream, [(seq, msgs[seq]) for seq in seqs]))

    with caplog.at_level(logging.WARNING, logger="waddle.nats"):
        take(2, 3, 5, 6)  # seq 1 is missing: 2 and 3 are kept, 5 and 6 go back
        assert [m.answers for m in msgs] == [[], [], [], [], [], ["nak"], ["nak"]]
        assert caplog.records == []
        take(4)  # beyond the cap too; the stream has waited for seq 0 long enough
        take(4)
        stalls = [r.getMessage() for r in caplog.records]
        assert len(stalls) == 1, stalls
        assert repr(stream) in stalls[0] and "waited for seq 0" in stalls[0]
        take(0)  # seq 0 lands (3 goes back: 0 and 2 are the lowest two kept); seq 1 is awaited
        take(4)
        assert len(caplog.records) == 2 and "waited for seq 1" in caplog.records[1].getMessage()
        take(1)
    assert log.held(stream) == 2
    log.close()
    assert [m.answers[-1] for m in msgs] == ["ack", "ack", "ack", "nak", "nak", "nak", "nak"]
    assert len(caplog.records) == 2


def test_windows_kept_past_gaps_stay_within_hold_bytes_over_all_streams(tmp_path: Path) -> None:
    source = tmp_path / "producer"
    settle(produce(source, "h", runs=2, steps=4, chunk=4, pause=0))
    (a, a_events), (b, b_events) = sorted(log_events(source).items())
    msgs = {s: [Message(e) for e in events[:4]] for s, events in ((a, a_events), (b, b_events))}
    log = IngestLog(tmp_path / "ingester")
    # Room for a's seqs 1-3 and b's seq 1 past their gaps at seq 0, and no more.
    room = sum(len(m.data) for m in msgs[a][1:]) + len(msgs[b][1].data)
    ingester = offline(log, hold_bytes=room)

    def take(stream: str, *seqs: int) -> None:
        asyncio.run(ingester.take(stream, [(seq, msgs[stream][seq]) for seq in seqs]))

    def answers(stream: str) -> list[list[str]]:
        return [m.answers for m in msgs[stream]]

    take(a, 1, 2, 3)
    take(b, 2, 1)  # b's seq 2 would go past the room: handed back, the nearer 1 kept
    assert answers(a) == [[]] * 4 and answers(b) == [[], [], ["nak"], []]
    take(a, 0)  # a is written up to 3: its room is free again
    take(b, 2, 3)  # their redeliveries are kept now
    assert answers(a) == [["ack"]] * 4 and answers(b) == [[], [], ["nak"], []]
    take(b, 0)
    log.close()
    assert answers(b) == [["ack"], ["ack"], ["nak", "ack"], ["ack"]]
    assert log_events(tmp_path / "ingester") == {a: a_events[:4], b: b_events[:4]}


def test_a_stream_another_writer_holds_is_handed_back_not_fatal(tmp_path: Path) -> None:
    stream, events = one_stream(tmp_path, "l", steps=1)
    root = tmp_path / "ingester"
    log = IngestLog(root)
    ingester = offline(log)
    msgs = [Message(event) for event in events]
    local = StreamWriter(log_dir(root) / stream)  # a producer of the same id on this host
    try:
        asyncio.run(ingester.take(stream, list(enumerate(msgs))))
    finally:
        local.close()
        log.close()
    assert [m.answers for m in msgs] == [["nak"]] * len(msgs)
    assert ingester.taken == 0


def ingester(root: Path, url: str, name: str) -> Server:
    return start_server(root, "--from", url, "--name", name, "--poll-interval", "0.02")


# The metrics checksums of tests/consumers/relay/support.py, read from the lake.
LAKE_CHECKSUMS = """
import duckdb, json, sys
rows = duckdb.sql(f\"\"\"
SELECT run_id, key, count(*), sum(hash(step, ts, value)), count(value), sum(isnan(value)::INT)
FROM read_parquet('{sys.argv[1]}/metrics/*/*/*.parquet', hive_partitioning = true,
                  hive_types = {{'project': VARCHAR, 'run_id': VARCHAR}})
GROUP BY run_id, key ORDER BY run_id, key\"\"\").fetchall()
print(json.dumps([[str(v) if i < 2 else int(v) for i, v in enumerate(r)] for r in rows]))
"""


def export_lake(root: Path, lake: Path) -> None:
    """``waddle-consume --consumer lake --once``: the ingester's finished runs into ``lake``."""
    argv = [*CONSUME, "--dir", str(root), "--consumer", "lake", "--lake", str(lake), "--once"]
    done = subprocess.run(argv, env=clean_env(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def lake_checksums(lake: Path) -> dict[tuple[str, str], tuple[int, ...]]:
    """Per run and key, the metrics checksums of the lake, queried by a fresh process."""
    argv = [sys.executable, "-c", LAKE_CHECKSUMS, str(lake)]
    done = subprocess.run(argv, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return {(run_id, key): tuple(rest) for run_id, key, *rest in json.loads(done.stdout)}


def combined(dbs: list[Path]) -> dict[tuple[str, str], tuple[int, ...]]:
    """Per run and key, the metrics checksums added up over several databases."""
    total: dict[tuple[str, str], Counter[int]] = {}
    for db in dbs:
        for run_id, key, *numbers in checksums(db):
            counter = total.setdefault((run_id, key), Counter())
            for index, number in enumerate(numbers):
                counter[index] += int(number)
    return {k: tuple(c[i] for i in range(4)) for k, c in total.items()}


@pytest.mark.slow
def test_every_event_lands_exactly_once_across_relays_broker_and_ingesters(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    folders = [tmp_path / "machine1", tmp_path / "machine2"]
    loads = [
        produce(folder, prefix, runs=3, steps=1500, chunk=100, pause=0.04)
        for folder, prefix in zip(folders, ("a", "b"), strict=True)
    ]
    relays = [Relay(folder, url) for folder in folders]
    a_root, b_root = tmp_path / "ingester-a", tmp_path / "ingester-b"
    servers = [ingester(a_root, url, "a"), ingester(b_root, url, "b")]
    try:
        for fault in ("ingester", "broker", "ingester"):
            eventually(lambda: last_seqs(a_root) or last_seqs(b_root), 30, "ingested events")
            time.sleep(0.7)
            if fault == "broker":
                nats_server.restart(signal.SIGKILL)
            else:
                servers[0].stop(signal.SIGKILL)
                servers[0] = ingester(a_root, url, "a")
        for load in loads:
            settle(load)
        expected = {**last_seqs(folders[0]), **last_seqs(folders[1])}
        for folder in folders:
            mine = last_seqs(folder)
            eventually(lambda f=folder, m=mine: published(f, url) == m, 60, "the relays")

        def ingested() -> bool:
            a, b = last_seqs(a_root), last_seqs(b_root)
            return not set(a) & set(b) and {**a, **b} == expected

        eventually(ingested, 90, "the ingesters' logs to hold every event")
        for server in servers:
            held = last_seqs(server.root)
            eventually(lambda r=server.root, h=held: caught_up(r, "duckdb", h), 60, "tables")
        for server in servers:
            assert server.stop() == 0, server.stderr()
        for relay in relays:
            assert relay.stop() == 0, relay.stderr()
    finally:
        for each in [*servers, *relays]:
            each.stop(signal.SIGKILL)
        for load in loads:
            load.kill()
            load.communicate()
    sources = {**log_events(folders[0]), **log_events(folders[1])}
    assert {**log_events(a_root), **log_events(b_root)} == sources
    tables = [a_root / "waddle.duckdb", b_root / "waddle.duckdb"]
    references = [reference_db(f, tmp_path / f"{f.name}.duckdb") for f in folders]
    assert combined(tables) == combined(references)
    assert len(combined(references)) == 6 * 2  # six runs, loss and acc
    lake = tmp_path / "lake"  # one lake that both ingesters write
    for root in (a_root, b_root):
        export_lake(root, lake)
    assert lake_checksums(lake) == combined(references)


def lease_holders(url: str) -> Counter[str]:
    """How many partitions each ingester leases now."""

    async def read(js: Any) -> Counter[str]:
        from nats.js.errors import NoKeysError, NotFoundError

        kv = await js.key_value(LEASES)
        holders: Counter[str] = Counter()
        try:
            keys = await kv.keys()
        except NoKeysError:
            return holders
        for key in keys:
            with contextlib.suppress(NotFoundError):  # released since it was listed
                holders[(await kv.get(key)).value.decode()] += 1
        return holders

    return Counter(call(url, read))


def is_prefix(copy: list[dict[str, Any]], whole: list[dict[str, Any]]) -> bool:
    return copy == whole[: len(copy)]


def finished_copies(roots: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """The streams that end with their finish in the log of one of ``roots`` (each in one
    only); the other copies are checked to be prefixes of them."""
    copies = [log_events(root) for root in roots]
    whole: dict[str, list[dict[str, Any]]] = {}
    for each in copies:
        for stream, events in each.items():
            if events[-1]["type"] == "finish":
                assert stream not in whole, f"{stream} finished in two logs"
                whole[stream] = events
    for each in copies:
        assert all(is_prefix(events, whole[s]) for s, events in each.items())
    return whole


@pytest.mark.slow
def test_a_dead_ingesters_partitions_are_taken_over_and_a_new_one_gets_its_share(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    url = nats_server.url
    first, second = tmp_path / "machine1", tmp_path / "machine2"
    a_root, b_root, c_root = (tmp_path / f"ingester-{n}" for n in "abc")
    servers = [ingester(a_root, url, "a"), ingester(b_root, url, "b")]
    relays = [Relay(first, url)]
    release = tmp_path / "release"
    load = None
    try:
        eventually(lambda: lease_holders(url) == {"a": 2, "b": 2}, 30, "two shares")
        # Six runs over the four partitions (t0-t5: 1, 3, 1, 3, 0, 2), finished together
        # once released: live when a is killed however slow the machine, so a holds no
        # finished copy and each of its streams goes on at b.
        load = produce(first, "t", runs=6, steps=1200, chunk=20, pause=0.1, release=release)
        eventually(lambda: last_seqs(a_root), 30, "ingester a to take live streams")
        assert load.poll() is None, load.communicate()[1]
        servers[0].stop(signal.SIGKILL)  # mid-load, never restarted
        release.touch()
        settle(load)
        expected = last_seqs(first)
        eventually(lambda: published(first, url) == expected, 60, "the relay")
        # b took a's partitions, and read the start of a's streams from the broker.
        eventually(lambda: last_seqs(b_root) == expected, 90, "ingester b to hold it all")
        assert lease_holders(url) == {"b": 4}

        servers.append(ingester(c_root, url, "c"))  # b gives up its surplus to c
        eventually(lambda: lease_holders(url) == {"b": 2, "c": 2}, 30, "shares again")
        relays.append(Relay(second, url))
        settle(produce(second, "u", runs=8, steps=300, chunk=100, pause=0.05))
        later = last_seqs(second)
        eventually(lambda: published(second, url) == later, 60, "the second relay")

        def split() -> bool:
            b, c = last_seqs(b_root), last_seqs(c_root)
            return {s: c.get(s, b.get(s)) for s in later} == later

        eventually(split, 90, "b and c to share the new streams")
        assert set(last_seqs(c_root)) and set(last_seqs(c_root)) <= set(later)
        for server in servers[1:]:
            held = last_seqs(server.root)
            eventually(lambda r=server.root, h=held: caught_up(r, "duckdb", h), 60, "tables")
            assert server.stop() == 0, server.stderr()
        for relay in relays:
            assert relay.stop() == 0, relay.stderr()
    finally:
        release.touch()
        for each in [*servers, *relays]:
            each.stop(signal.SIGKILL)
        if load is not None:
            load.kill()
            load.communicate()
    sources = {**log_events(first), **log_events(second)}
    assert finished_copies([a_root, b_root, c_root]) == sources
    assert log_events(b_root).keys() >= expected.keys()  # a's streams too, each whole
    references = [reference_db(f, tmp_path / f"{f.name}.duckdb") for f in (first, second)]
    lake = tmp_path / "lake"
    for root in (a_root, b_root, c_root):  # a's copies are unfinished: not exported
        export_lake(root, lake)
    assert lake_checksums(lake) == combined(references)

"""The relay to JetStream: every event once in the broker, with its id, through a relay
crash and a broker outage (real processes)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.consumers.logs import write_run
from tests.consumers.relay.support import Relay, last_seqs, log_events, stream_events
from tests.consumers.relay.test_consumer import corrupt_lines
from tests.helpers import eventually
from tests.nats.conftest import NatsServer, call, produce, settle
from waddle.cli.parser import main
from waddle.consumers.base import run_consumer
from waddle.consumers.nats.broker import MSG_ID, STREAM, subject, unpack
from waddle.consumers.nats.publisher import NatsRelay, nats_relay_name
from waddle.consumers.registry import StateStore
from waddle.consumers.relay import parts
from waddle.eventlog.record import encode


def published(root: Path, url: str) -> dict[str, int]:
    """The last seq per stream the relay to ``url`` committed."""
    return {s: o.seq for s, o in StateStore(root).load(nats_relay_name(url)).items()}


def broker_messages(url: str) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(subject, Nats-Msg-Id, events) of every message the stream holds, in order; each
    id names the message's stream, first and last seq, and its events' seqs rise by one."""

    async def read(js: Any) -> list[Any]:
        total = (await js.stream_info(STREAM)).state.messages
        return [await js.get_msg(STREAM, seq) for seq in range(1, total + 1)]

    found = []
    for m in call(url, read):
        events = [orjson.loads(line) for line in unpack(m.data)]
        stream = m.headers[MSG_ID].rpartition(":")[0]
        assert m.headers[MSG_ID] == f"{stream}:{events[0]['seq']}-{events[-1]['seq']}"
        assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[-1]["seq"] + 1))
        found.append((m.subject, m.headers[MSG_ID], events))
    return found


def broker_events(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, stream, event) of every event in the broker's messages, in order."""
    return [
        (subject, ident.rpartition(":")[0], event)
        for subject, ident, events in broker_messages(url)
        for event in events
    ]


def relay_once(root: Path, url: str) -> None:
    relay = NatsRelay(root, url, give_up_after=20)
    run_consumer(relay, root, threading.Event(), once=True)
    assert relay.failure is None


def test_each_event_is_published_once_with_its_stream_and_seq(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "producer"
    settle(produce(root, "a", runs=2, steps=300, chunk=300, pause=0))
    url = nats_server.url
    relay_once(root, url)
    events = log_events(root)
    assert published(root, url) == last_seqs(root)
    expected = {
        (subject("proj-a", stream, 4), stream, orjson.dumps(event))
        for stream, stream_events in events.items()
        for event in stream_events
    }
    got = broker_events(url)
    assert len(got) == sum(len(e) for e in events.values()) == len(expected)
    assert {(s, i, orjson.dumps(e)) for s, i, e in got} == expected
    messages = nats_server.messages()
    assert messages < len(expected) / 50  # windows of events, not a message each

    # A relay that crashed after publishing and before committing sends it all again:
    # the broker acknowledges the repeats (same Nats-Msg-Id) without storing them.
    StateStore(root).publish(nats_relay_name(url), {})
    relay_once(root, url)
    assert published(root, url) == last_seqs(root)
    assert nats_server.messages() == messages


def test_the_relay_loses_nothing_through_a_broker_outage_and_its_own_crash(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "producer"
    url = nats_server.url
    load = produce(root, "b", runs=2, steps=4000, chunk=100, pause=0.05)
    relay = Relay(root, url)
    relays = [relay]
    try:
        eventually(lambda: published(root, url), 30, "the relay's first commit")
        relay.stop(signal.SIGKILL)  # mid-load: what it published past its commit repeats
        relay = Relay(root, url)
        relays.append(relay)
        nats_server.stop(signal.SIGKILL)
        time.sleep(1.5)  # the relay backs off meanwhile; the producer keeps logging
        before = published(root, url)
        nats_server.start()
        settle(load)
        expected = last_seqs(root)
        eventually(lambda: published(root, url) == expected, 60, "the relay to catch up")
        assert relay.stop() == 0, relay.stderr()
    finally:
        load.kill()
        load.communicate()
        for each in relays:
            each.stop(signal.SIGKILL)
    assert sum(seq + 1 for seq in before.values()) < sum(seq + 1 for seq in expected.values())
    held = {(stream, event["seq"]) for _, stream, event in broker_events(url)}
    assert held == {(s, seq) for s, last in expected.items() for seq in range(last + 1)}
    ids = [msg_id for _, msg_id, _ in broker_messages(url)]
    assert len(set(ids)) == len(ids)


def test_a_longer_window_from_the_same_seq_after_a_relay_crash_is_not_dropped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    root, url = tmp_path / "producer", nats_server.url
    write_run(root, "r", 10, finish=None)
    relay_once(root, url)  # one window, seqs 0-10
    write_run(root, "r", 10, first_step=10, resume=True)
    StateStore(root).publish(nats_relay_name(url), {})  # a crash before the commit
    relay_once(root, url)  # one window from seq 0 again, longer: a new id, not a repeat
    assert [e["seq"] for e in stream_messages(url, "r")][-1] == last_seqs(root)["r"]
    assert {e["seq"] for e in stream_messages(url, "r")} == set(range(last_seqs(root)["r"] + 1))


def test_no_message_is_longer_than_the_relay_allows(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    root = tmp_path / "producer"
    write_run(root, "r", 300)
    relay = NatsRelay(root, nats_server.url, give_up_after=20, message_bytes=2000)
    run_consumer(relay, root, threading.Event(), once=True)
    messages = broker_messages(nats_server.url)
    sizes = [sum(len(encode(event)) for event in events) for _, _, events in messages]
    assert max(sizes) <= 2000 < sum(sizes) / 10
    assert [e for _, _, events in messages for e in events] == stream_events(root, "r")


def test_sync_publishes_what_is_on_disk_and_says_so(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "producer"
    settle(produce(root, "s", runs=2, steps=50, chunk=50, pause=0))
    total = sum(seq + 1 for seq in last_seqs(root).values())
    assert main(["sync", nats_server.url, "--dir", str(root)]) == 0
    assert f"holds {total} events of 2 streams" in capsys.readouterr().err
    assert len(broker_events(nats_server.url)) == total
    nats_server.stop(signal.SIGKILL)
    settle(produce(root, "t", runs=1, steps=5, chunk=5, pause=0))
    assert main(["sync", nats_server.url, "--dir", str(root), "--timeout", "1"]) == 1
    assert "run it again to resume" in capsys.readouterr().err


def stream_messages(url: str, stream: str) -> list[dict[str, Any]]:
    """The events the broker holds for ``stream``."""
    return [event for _, each, event in broker_events(url) if each == stream]


def test_seqs_the_log_lost_are_published_as_skipped_so_the_broker_holds_no_gap(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    root, url = tmp_path / "producer", nats_server.url
    write_run(root, "holed", 50)
    write_run(root, "late", 10, finish=None)
    corrupt_lines(root, "holed", 20)  # inside a batch
    relay_once(root, url)
    write_run(root, "late", 10, first_step=10, resume=True)
    first_new = published(root, url)["late"] + 1
    corrupt_lines(root, "late", first_new)  # the first event after a commit
    relay_once(root, url)
    assert published(root, url) == last_seqs(root)
    for stream, lost in (("holed", 20), ("late", first_new)):
        held = stream_messages(url, stream)
        assert [e["seq"] for e in held] == list(range(last_seqs(root)[stream] + 1))
        assert held[lost]["type"] == "skipped" and "corrupt line" in held[lost]["reason"]
        assert [e for e in held if e["seq"] != lost] == stream_events(root, stream)


def test_a_loss_longer_than_placeholders_stand_for_stops_the_stream_before_it(
    nats_server: NatsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, url = tmp_path / "producer", nats_server.url
    write_run(root, "holed", 30)
    write_run(root, "whole", 30)
    corrupt_lines(root, "holed", 10, 11)
    monkeypatch.setattr(parts, "MAX_SKIPPED", 1)
    with caplog.at_level(logging.ERROR, logger="waddle.nats"):
        relay_once(root, url)
        relay_once(root, url)
    assert [e["seq"] for e in stream_messages(url, "holed")] == list(range(10))
    assert "holed" not in published(root, url)
    assert published(root, url)["whole"] == last_seqs(root)["whole"]
    stops = [r.getMessage() for r in caplog.records]
    assert len(stops) == 2 and all("'holed' stops at seq 10" in m for m in stops)


def test_an_outage_is_reported_once_however_many_streams_wait_for_it(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, url = tmp_path / "producer", nats_server.url
    for index in range(4):
        write_run(root, f"r{index}", 5)
    nats_server.stop(signal.SIGKILL)
    relay = NatsRelay(root, url, give_up_after=1, timeout=1)
    with caplog.at_level(logging.WARNING, logger="waddle.nats"):
        run_consumer(relay, root, threading.Event(), once=True)
    assert relay.failure is not None
    logs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waddle relay")]
    assert sum("retrying with backoff" in m for m in logs) == 1, logs
    assert sum("publishing has stopped" in m for m in logs) == 1, logs
    assert published(root, url) == {}
    nats_server.start()
    relay_once(root, url)  # from where it stopped: nothing was committed, nothing is lost
    assert published(root, url) == last_seqs(root)


def test_a_bug_while_connecting_is_raised_not_waited_out_as_an_outage(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "producer"
    write_run(root, "r", 3)

    async def broken(url: str, name: str) -> Any:
        raise TypeError("a bad argument")

    monkeypatch.setattr("waddle.consumers.nats.publisher.connect", broken)
    relay = NatsRelay(root, nats_server.url, give_up_after=60)
    with pytest.raises(TypeError, match="a bad argument"):
        run_consumer(relay, root, threading.Event(), once=True)


def test_an_event_over_the_servers_max_payload_goes_as_skipped_and_the_rest_goes_on(
    nats_server: NatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, url = tmp_path / "producer", nats_server.url
    huge = "x" * 1_250_000  # its line is over the server's max_payload of 1 MiB

    def payload(step: int) -> dict[str, Any]:
        return {"loss": 1.0, "note": huge} if step == 2 else {"loss": 1.0 / (step + 1)}

    write_run(root, "big", 5, payload=payload)
    write_run(root, "small", 5)
    relay = NatsRelay(root, url, give_up_after=5, timeout=2)
    with caplog.at_level(logging.ERROR, logger="waddle.nats"):
        run_consumer(relay, root, threading.Event(), once=True)
    assert relay.failure is None  # before: refused again and again until it gave up
    assert published(root, url) == last_seqs(root)
    assert stream_messages(url, "small") == stream_events(root, "small")
    logged, held = stream_events(root, "big"), stream_messages(url, "big")
    oversize = next(e["seq"] for e in logged if e.get("data", {}).get("note") == huge)
    assert [e["seq"] for e in held] == [e["seq"] for e in logged]
    assert held[oversize]["type"] == "skipped" and "max_payload" in held[oversize]["reason"]
    assert [e for e in held if e["seq"] != oversize] == logged[:oversize] + logged[oversize + 1 :]
    (error,) = [r.getMessage() for r in caplog.records]
    assert f"stream 'big' seq {oversize}" in error

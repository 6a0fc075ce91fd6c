"""The relay to JetStream: every event once in the broker, with its id, through a relay
crash and a broker outage (real processes)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.consumers.relay.support import Relay, last_seqs, log_events
from tests.helpers import eventually
from tests.nats.conftest import NatsServer, call, produce, settle
from waddle.cli.parser import main
from waddle.consumers.base import run_consumer
from waddle.consumers.nats.broker import MSG_ID, STREAM
from waddle.consumers.nats.publisher import NatsRelay, nats_relay_name
from waddle.consumers.registry import StateStore


def published(root: Path, url: str) -> dict[str, int]:
    """The last seq per stream the relay to ``url`` committed."""
    return {s: o.seq for s, o in StateStore(root).load(nats_relay_name(url)).items()}


def broker_messages(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(subject, Nats-Msg-Id, event) of every message the stream holds, in order."""

    async def read(js: Any) -> list[Any]:
        total = (await js.stream_info(STREAM)).state.messages
        return [await js.get_msg(STREAM, seq) for seq in range(1, total + 1)]

    return [(m.subject, m.headers[MSG_ID], orjson.loads(m.data)) for m in call(url, read)]


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
        (f"waddle.events.proj-a.{stream}", f"{stream}:{event['seq']}", orjson.dumps(event))
        for stream, stream_events in events.items()
        for event in stream_events
    }
    got = broker_messages(url)
    assert len(got) == sum(len(e) for e in events.values()) == len(expected)
    assert {(s, i, orjson.dumps(e)) for s, i, e in got} == expected

    # A relay that crashed after publishing and before committing sends it all again:
    # the broker acknowledges the repeats (same Nats-Msg-Id) without storing them.
    StateStore(root).publish(nats_relay_name(url), {})
    relay_once(root, url)
    assert published(root, url) == last_seqs(root)
    assert nats_server.messages() == len(expected)


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
    assert nats_server.messages() == sum(seq + 1 for seq in expected.values())
    ids = [msg_id for _, msg_id, _ in broker_messages(url)]
    assert len(set(ids)) == len(ids)


def test_sync_publishes_what_is_on_disk_and_says_so(
    nats_server: NatsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "producer"
    settle(produce(root, "s", runs=2, steps=50, chunk=50, pause=0))
    total = sum(seq + 1 for seq in last_seqs(root).values())
    assert main(["sync", nats_server.url, "--dir", str(root)]) == 0
    assert f"holds {total} events of 2 streams" in capsys.readouterr().err
    assert nats_server.messages() == total
    nats_server.stop(signal.SIGKILL)
    settle(produce(root, "t", runs=1, steps=5, chunk=5, pause=0))
    assert main(["sync", nats_server.url, "--dir", str(root), "--timeout", "1"]) == 1
    assert "run it again to resume" in capsys.readouterr().err

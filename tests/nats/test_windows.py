"""Backfill against a real nats-server: a stream's windows read back from the broker."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from tests.consumers.logs import write_run
from tests.consumers.relay.support import last_seqs
from tests.nats.conftest import TEST_LAYOUT, NatsServer
from waddle.consumers.base import run_consumer
from waddle.consumers.nats import client as nats_client
from waddle.consumers.nats.broker import subject
from waddle.consumers.nats.publisher import NatsRelay
from waddle.consumers.nats.windows import backfill


def test_a_backfill_reads_every_window_even_when_the_server_answers_late(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "producer"
    write_run(root, "r", 200)
    relay = NatsRelay(root, nats_server.url, give_up_after=20, message_bytes=2000)
    run_consumer(relay, root, threading.Event(), once=True)
    last = last_seqs(root)["r"]
    # A pull answered after the client stopped waiting for it (a loaded machine): an empty
    # answer is not the end of what the broker holds.
    monkeypatch.setattr(nats_client, "PULL_GRACE_S", 0.0)

    async def main() -> tuple[list[int], int]:
        client = await nats_client.connect(nats_server.url, "test")
        try:
            where = subject("proj", "r", TEST_LAYOUT.partitions or 1)
            found, reached = await backfill(client, "r", where, 9, last + 1, 4)
        finally:
            await client.close()
        return [seq for w in found for seq in range(w.first, w.last + 1)], reached

    seqs, reached = asyncio.run(asyncio.wait_for(main(), 60))
    assert reached == last + 1
    assert seqs[0] <= 10 and sorted(set(seqs)) == list(range(seqs[0], last + 1))

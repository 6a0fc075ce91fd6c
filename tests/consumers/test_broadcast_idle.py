"""The broadcaster's tail with nothing live (waddle/consumers/broadcast.py,
``IdleSkippingReader``): with no client it waits until one joins, and the join wakes it;
with a client and every stream parked, a new stream still reaches the client.

The tail's idle wait is made an hour long, so whatever arrives was woken for.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from tests.consumers.logs import write_run
from tests.helpers import eventually
from waddle.consumers.base import ConsumerThread
from waddle.consumers.broadcast import Broadcaster, Hub, IdleSkippingReader, Subscriber
from waddle.eventlog import reader as reader_module
from waddle.eventlog.parking import Parking
from waddle.eventlog.segment import log_dir


async def sent(subscriber: Subscriber) -> list[int]:
    """The seqs of the first chunk the subscriber is sent (on the hub's loop)."""
    while (chunk := subscriber.take()) is None:
        await asyncio.sleep(0.01)
    return [event["seq"] for event in chunk.events]


def test_a_client_joining_wakes_a_tail_waiting_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "IDLE_WAIT_S", 3600.0)
    quiet = threading.Event()
    quiet_armed = threading.Event()  # a wait with a client, after the tail armed the hub
    noted = IdleSkippingReader._quiet

    def noting(self: IdleSkippingReader, parking: Parking) -> bool:
        if noted(self, parking):
            quiet.set()
            if self.hub.armed and self.hub.subscribers:
                quiet_armed.set()
            return True
        return False

    monkeypatch.setattr(IdleSkippingReader, "_quiet", noting)
    write_run(tmp_path, "done", 3, project="p")
    past = time.time() - 3600
    # Neither folder just changed (a log folder changed within 2 s is polled whatever
    # its streams are), so only the watcher can bring the new stream.
    os.utime(log_dir(tmp_path) / "done", (past, past))
    os.utime(log_dir(tmp_path), (past, past))
    hub = Hub()
    broadcaster = Broadcaster(tmp_path, hub)
    thread = ConsumerThread(broadcaster, tmp_path, interval=0.01, reader=broadcaster.tail_reader)
    subscriber = Subscriber()
    subscriber.subscription.projects.add("p")

    async def scenario() -> list[int]:
        hub.attach(asyncio.get_running_loop())
        await asyncio.to_thread(thread.start)
        try:
            await asyncio.to_thread(eventually, quiet.is_set, 10, "a wait for a client")
            await asyncio.wait_for(hub.join(subscriber), 10)
            await asyncio.to_thread(eventually, quiet_armed.is_set, 10, "a wait with a client")
            write_run(tmp_path, "fresh", 2, project="p", finish=None)
            return await asyncio.wait_for(sent(subscriber), 10)
        finally:
            await asyncio.to_thread(thread.stop, 10)
            hub.detach()

    assert asyncio.run(scenario())[0] == 0


def test_a_join_wakes_every_tail_waiting_for_a_client() -> None:
    hub = Hub()
    woken: list[str] = []
    hub.on_join(lambda: woken.append("first"))
    hub.on_join(lambda: woken.append("second"))  # replaces nothing

    async def scenario() -> None:
        joining = asyncio.ensure_future(hub.join(Subscriber()))
        await asyncio.sleep(0)  # join runs to its wait for the tail
        hub.arm()
        await asyncio.wait_for(joining, 10)

    asyncio.run(scenario())
    assert woken == ["first", "second"]

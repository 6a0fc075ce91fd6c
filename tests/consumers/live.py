"""A live broadcaster with one subscribed client, for the tests that check what it sends
while a log is being written."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

from waddle.consumers.base import ConsumerThread
from waddle.consumers.broadcast import Broadcaster, Chunk, Hub, Subscriber


def broadcast_while(
    root: Path,
    write: Callable[[], object],
    take: Callable[[Chunk], object],
    done: Callable[[], bool],
    *,
    projects: Iterable[str],
    runs: Iterable[str] = (),
    polls: int = 2000,
) -> None:
    """Run a broadcaster on ``root`` whose one client follows ``projects`` and ``runs``;
    call ``write`` (in a thread), then hand each chunk the client is sent to ``take``
    until ``done()``, looking every 10 ms, ``polls`` times at most (the test's bound)."""

    async def scenario() -> None:
        hub = Hub()
        hub.attach(asyncio.get_running_loop())
        client = Subscriber()
        client.subscription.projects.update(projects)
        client.subscription.runs.update(runs)
        hub.subscribers.add(client)
        broadcaster = Broadcaster(root, hub)
        thread = ConsumerThread(broadcaster, root, interval=0.01, reader=broadcaster.tail_reader)
        await asyncio.to_thread(thread.start)
        try:
            await asyncio.to_thread(write)
            for _ in range(polls):
                while (chunk := client.take()) is not None:
                    take(chunk)
                if done():
                    return
                await asyncio.sleep(0.01)
        finally:
            await asyncio.to_thread(thread.stop, 10)

    asyncio.run(scenario())

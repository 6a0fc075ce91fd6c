"""The NATS client as Waddle's relays and ingesters use it: connecting with a bounded
number of attempts, waiting out an outage with backoff, an asyncio loop for callers that
are threads (``Loop``), and pull requests on a consumer (``Puller``).

nats-py is asyncio; the relay and the ingester are threads, so each runs its own event
loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from waddle.errors import TransientError

if TYPE_CHECKING:
    from waddle.consumers.relay.client import Backoff

logger = logging.getLogger("waddle.nats")

CONNECT_ATTEMPTS = 3
# A pull's answer may trail its expiry by a network round trip.
PULL_GRACE_S = 0.5
# How often a backoff wait looks whether it should stop.
STOP_POLL_S = 0.05

T = TypeVar("T")


class PullRefused(TransientError):
    """The server refused a pull request (409: the consumer was deleted or is busy)."""


async def connect(url: str, name: str) -> Any:
    """A client that tries ``CONNECT_ATTEMPTS`` times to connect, or to reconnect after it
    lost the server, then raises (or closes): callers wait out longer outages with their
    own backoff, so that a stop is never stuck inside the client. One warning per outage."""
    from nats.aio.client import Client

    client = Client()

    async def on_error(exc: Exception) -> None:
        logger.debug("waddle %s: NATS client error: %s", name, exc)

    async def on_disconnect() -> None:
        if not client.is_closed:
            logger.warning("waddle %s: lost the NATS server %s; reconnecting", name, url)

    async def on_reconnect() -> None:
        logger.warning("waddle %s: reconnected to the NATS server %s", name, url)

    connecting = client.connect(
        servers=[url],
        name=name,
        allow_reconnect=True,
        max_reconnect_attempts=CONNECT_ATTEMPTS,
        reconnect_time_wait=1,
        connect_timeout=2,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )
    try:
        await connecting
    except BaseException:
        await client.close()  # a half-made connection keeps its socket otherwise
        raise
    return client


async def back_off(backoff: Backoff, attempt: int, stopping: Callable[[], bool]) -> bool:
    """Wait out backoff step ``attempt`` of an outage, ending early once ``stopping()``
    (a stop must not wait for a long step); whether to retry (False: stopping). The
    relay and the ingester share it, each logging the outage its own way."""
    deadline = time.monotonic() + backoff.delay(attempt)
    while not stopping():
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        await asyncio.sleep(min(STOP_POLL_S, left))
    return False


class Loop:
    """An asyncio event loop in a daemon thread, for callers that are threads."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and its thread; tasks still pending are cancelled."""
        if self.loop.is_closed():
            return
        self.run(_cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


async def _cancel_all() -> None:
    """Cancel the loop's other tasks and let them end, as ``asyncio.run`` does at its end:
    a closed client leaves tasks that must see their cancellation before the loop goes."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class Puller:
    """Pulls batches from one consumer with one standing inbox.

    A pull request asks for up to ``batch`` messages and expires after ``wait`` seconds;
    the server sends what it has as it comes and ends the request with a status (408 when
    it expired, 404 when nothing was there). Messages of an earlier request that arrive
    late are taken by the next ``fetch``: they are delivered to this client all the same.
    """

    def __init__(self, client: Any, stream: str, consumer: str) -> None:
        self.client = client
        self.inbox = client.new_inbox()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._sub: Any = None

    async def fetch(self, batch: int, wait: float) -> list[Any]:
        """Up to ``batch`` messages: those there now (``wait`` 0), or within ``wait`` seconds.

        A short expiry is no substitute for 0: the server then sends a message or two
        before the request ends, not the batch it holds.
        """
        if self._sub is None:
            self._sub = await self.client.subscribe(self.inbox, cb=self.queue.put)
        request = {"batch": batch, "no_wait": True} if wait <= 0 else {"batch": batch}
        if wait > 0:
            request["expires"] = int(wait * 1e9)
        await self.client.publish(self.subject, json.dumps(request).encode(), reply=self.inbox)
        msgs: list[Any] = []
        deadline = time.monotonic() + wait + PULL_GRACE_S
        while len(msgs) < batch:
            try:
                msg = await asyncio.wait_for(self.queue.get(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            status = (msg.headers or {}).get("Status")
            if status is None:
                msgs.append(msg)
            elif status in ("404", "408"):
                break  # the request is over: nothing more, or it expired
            elif status == "409":
                raise PullRefused(f"the server refused a pull: {msg.headers}")
        return msgs

    async def close(self) -> None:
        """Stop taking messages (those delivered later go back after ``ack_wait``)."""
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

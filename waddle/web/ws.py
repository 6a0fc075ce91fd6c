"""``WS /ws``: the live-updates protocol (docs/api.md has the client's view).

The client sends JSON text messages::

    {"op": "subscribe", "project": "NAME"}            every stream of a project
    {"op": "subscribe", "runs": ["RUN_ID", ...]}      every stream of these runs
        ... optionally with "since": {"STREAM": SEQ}  first the events after SEQ, from the log
    {"op": "unsubscribe", "project": ..., "runs": [...]}  (no field: everything)
    {"op": "ping"}

and gets JSON text messages; those with ``"events"`` carry ``"stream"``, ``"run_id"`` and
events of that stream in seq order, as in the log. Control messages carry ``"type"``:
``subscribed``, ``replayed`` (a ``since`` replay reached the live edge), ``heartbeat``,
``pong`` and ``error`` (a malformed message; the connection stays usable).

One task per connection (``Client.pump``) does every send, so messages never interleave:
control messages first, then log replays, then live chunks from the ``Subscriber``'s
queue. A send that stalls past ``ws_send_timeout`` ends the connection; the tail and
the other clients never wait on it (see ``waddle.consumers.broadcast``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocket, WebSocketDisconnect

from waddle.consumers.broadcast import (
    Broadcaster,
    Chunk,
    StreamInfo,
    Subscriber,
    chunks,
    locate,
    read_after,
)
from waddle.eventlog.reader import Batch, Offset
from waddle.ids import is_valid_id
from waddle.web.settings import Settings

logger = logging.getLogger("waddle.web")

MAX_CONTROL = 64
MAX_RUNS = 1000
MAX_SINCE = 10_000


class ProtocolError(Exception):
    """A client message that breaks the protocol; answered with an error message."""


class SlowClient(Exception):
    """A send stalled past the timeout or the client flooded us with bad messages."""


class Client:
    """One WebSocket connection: its subscriber, its control messages and its pump."""

    def __init__(self, ws: WebSocket, broadcaster: Broadcaster, settings: Settings) -> None:
        self.ws = ws
        self.broadcaster = broadcaster
        self.settings = settings
        self.subscriber = Subscriber(settings.ws_queue_events)
        self.control: deque[dict[str, Any]] = deque()
        self._cursors: dict[str, Offset] = {}

    def say(self, message: dict[str, Any]) -> None:
        if len(self.control) >= MAX_CONTROL:
            raise SlowClient("too many control messages waiting")
        self.control.append(message)
        self.subscriber.wake.set()

    async def receive(self, message: dict[str, Any]) -> None:
        """Handle one client message; a bad one gets an error message, nothing more."""
        try:
            request = _parse(message)
            op = request.get("op")
            if op == "subscribe":
                await self._subscribe(request)
            elif op == "unsubscribe":
                self._unsubscribe(request)
            elif op == "ping":
                self.say({"type": "pong", "ts": time.time()})
            else:
                raise ProtocolError(f"unknown op {op!r}: use subscribe, unsubscribe or ping")
        except ProtocolError as exc:
            self.say({"type": "error", "error": "invalid_message", "detail": str(exc)})

    async def _subscribe(self, request: dict[str, Any]) -> None:
        project, runs, since = _subscription(request)
        directory = self.broadcaster.directory
        infos = await run_in_threadpool(
            lambda: {stream: directory.info(stream) for stream in since}
        )
        # No await from here on: no live chunk can be taken between the subscription
        # and the replay points, so nothing after ``since`` is skipped.
        wanted = self.subscriber.subscription
        if project is not None:
            wanted.projects.add(project)
        wanted.runs.update(runs)
        replaying = {}
        for stream, seq in since.items():
            if wanted.matches(infos[stream]):
                start = max(seq, self.subscriber.delivered.get(stream, -1))
                self.subscriber.delivered[stream] = start
                self.subscriber.replay[stream] = start
                replaying[stream] = start
        self.say(
            {
                "type": "subscribed",
                "projects": sorted(wanted.projects),
                "runs": sorted(wanted.runs),
                "replaying": replaying,
            }
        )

    def _unsubscribe(self, request: dict[str, Any]) -> None:
        wanted = self.subscriber.subscription
        if request.keys() <= {"op"}:
            wanted.projects.clear()
            wanted.runs.clear()
        else:
            project, runs, _ = _subscription(request, needed=False)
            wanted.projects.discard(project or "")
            wanted.runs.difference_update(runs)
        self.say(
            {"type": "subscribed", "projects": sorted(wanted.projects), "runs": sorted(wanted.runs)}
        )

    async def pump(self) -> None:
        """Send everything due, forever: control, then replays, then live chunks."""
        subscriber = self.subscriber
        while True:
            if self.control:
                await self._send(orjson.dumps(self.control.popleft()).decode())
            elif subscriber.replay:
                await self._replay_step(*next(iter(subscriber.replay.items())))
            elif (chunk := subscriber.take()) is not None:
                if subscriber.subscription.matches(chunk.info):
                    await self._send_chunk(chunk)
            else:
                subscriber.wake.clear()
                try:
                    await asyncio.wait_for(subscriber.wake.wait(), self.settings.ws_heartbeat)
                except asyncio.TimeoutError:
                    self.say({"type": "heartbeat", "ts": time.time()})

    async def _replay_step(self, stream: str, after: int) -> None:
        offset = self._cursors.get(stream)
        if offset is None or offset.seq != after:
            offset = None
        batch, info = await run_in_threadpool(self._read, stream, after, offset)
        if self.subscriber.replay.get(stream) != after:
            return  # moved on meanwhile: the next step starts from the new point
        if not self.subscriber.subscription.matches(info):
            del self.subscriber.replay[stream]  # unsubscribed meanwhile
            return
        if not batch.events:
            del self.subscriber.replay[stream]
            self._cursors.pop(stream, None)
            self.say({"type": "replayed", "stream": stream, "seq": after})
            return
        for chunk in chunks(stream, info, batch.events):
            await self._send_chunk(chunk)
        self.subscriber.replay[stream] = batch.events[-1]["seq"]
        self._cursors[stream] = batch.offset

    def _read(self, stream: str, after: int, offset: Offset | None) -> tuple[Batch, StreamInfo]:
        reader = self.broadcaster.reader
        batch = read_after(reader, stream, offset or locate(reader, stream, after))
        return batch, self.broadcaster.directory.info(stream)

    async def _send_chunk(self, chunk: Chunk) -> None:
        await self._send(chunk.text)
        self.subscriber.sent(chunk.stream, chunk.last)

    async def _send(self, text: str) -> None:
        try:
            await asyncio.wait_for(self.ws.send_text(text), self.settings.ws_send_timeout)
        except asyncio.TimeoutError:
            raise SlowClient("a send stalled past the timeout") from None


def _parse(message: dict[str, Any]) -> dict[str, Any]:
    text = message.get("text")
    if text is None:
        raise ProtocolError("send JSON text messages, not binary ones")
    try:
        request = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not valid JSON: {exc.msg}") from None
    if type(request) is not dict:
        raise ProtocolError('a message is a JSON object such as {"op": "subscribe", ...}')
    return request


def _subscription(
    request: dict[str, Any], needed: bool = True
) -> tuple[str | None, list[str], dict[str, int]]:
    project = request.get("project")
    runs = request.get("runs", [])
    since = request.get("since", {})
    if project is not None and (type(project) is not str or not project or len(project) > 512):
        raise ProtocolError("project must be a non-empty string")
    if type(runs) is not list or len(runs) > MAX_RUNS or not all(is_valid_id(r) for r in runs):
        raise ProtocolError(f"runs must be a list of at most {MAX_RUNS} valid run ids")
    if type(since) is not dict or len(since) > MAX_SINCE:
        raise ProtocolError("since must be an object of stream id to seq")
    for stream, seq in since.items():
        if not is_valid_id(stream) or type(seq) is not int or not -1 <= seq < 2**62:
            raise ProtocolError(
                f"since[{stream[:200]!r}] must be a valid stream id and a seq >= -1"
            )
    if needed and project is None and not runs:
        raise ProtocolError('subscribe needs "project" or "runs"')
    return project, runs, since


async def websocket_endpoint(ws: WebSocket) -> None:
    await ws.accept()
    state = ws.app.state
    client = Client(ws, state.broadcaster, state.settings)
    hub = state.broadcaster.hub
    hub.subscribers.add(client.subscriber)
    pump = asyncio.create_task(client.pump())
    try:
        while not pump.done():
            incoming = asyncio.ensure_future(ws.receive())
            await asyncio.wait({incoming, pump}, return_when=asyncio.FIRST_COMPLETED)
            if not incoming.done():
                incoming.cancel()
                break
            message = incoming.result()
            if message["type"] == "websocket.disconnect":
                break
            await client.receive(message)
    except SlowClient:
        with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
            await asyncio.wait_for(ws.close(1008, "too slow"), 1.0)
    finally:
        hub.subscribers.discard(client.subscriber)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await _ended(pump)


async def _ended(pump: asyncio.Task[None]) -> None:
    """Wait for the pump; log it if it died of a bug rather than a gone or slow client."""
    try:
        await pump
    except (SlowClient, WebSocketDisconnect, OSError):
        pass
    except Exception:
        logger.exception("waddle: the WebSocket sender failed")

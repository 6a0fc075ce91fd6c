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

What a client can make the server hold is bounded: ``MAX_RUNS`` runs and
``MAX_PROJECTS`` projects followed, ``MAX_SINCE`` replays waiting, ``MAX_CONTROL``
control messages queued; a ``since`` id outside the subscription is ignored, and one
the log does not hold is never remembered. All of it goes with the connection.

One task per connection (``Client.pump``) does every send, so messages never interleave:
control messages first, then log replays, then live chunks from the ``Subscriber``'s
queue. A send that stalls past ``ws_send_timeout`` aborts the connection (see
``_drop``); the tail and the other clients never wait on it (see
``waddle.consumers.broadcast``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.auto import AutoWebSocketsProtocol

from waddle.consumers.broadcast import (
    Broadcaster,
    Chunk,
    StreamInfo,
    Subscriber,
    Subscription,
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
MAX_PROJECTS = 100
MAX_SINCE = 10_000
ABORT = "waddle.abort"


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

    async def receive(self, message: Mapping[str, Any]) -> None:
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
        wanted = self.subscriber.subscription
        named = {project} if project is not None else set()
        after = Subscription(wanted.projects | named, wanted.runs | set(runs))
        if len(after.runs) > MAX_RUNS:
            raise ProtocolError(f"a connection follows at most {MAX_RUNS} runs: unsubscribe some")
        if len(after.projects) > MAX_PROJECTS:
            raise ProtocolError(
                f"a connection follows at most {MAX_PROJECTS} projects: unsubscribe some"
            )
        directory = self.broadcaster.directory
        infos = await run_in_threadpool(
            lambda: {stream: directory.lookup(stream) for stream in since}
        )
        # No await from here on: no live chunk can be taken between the subscription
        # and the replay points, so nothing after ``since`` is skipped.
        starts = {
            stream: seq
            for stream, seq in since.items()
            if after.matches(infos[stream] or StreamInfo.of_id(stream))
        }
        replay, delivered = self.subscriber.replay, self.subscriber.delivered
        if len(replay.keys() | starts.keys()) > MAX_SINCE:
            raise ProtocolError(
                f"at most {MAX_SINCE} since replays may wait at once: wait for their "
                "replayed messages"
            )
        wanted.projects, wanted.runs = after.projects, after.runs
        for stream, seq in starts.items():
            replay[stream] = max(seq, delivered.get(stream, -1))
            # A stream not in the log is only replayed (it may appear meanwhile), not
            # marked delivered: the server remembers no id just because a client named it.
            if infos[stream] is not None:
                delivered[stream] = replay[stream]
        self.say(
            {
                "type": "subscribed",
                "projects": sorted(wanted.projects),
                "runs": sorted(wanted.runs),
                "replaying": {stream: replay[stream] for stream in starts},
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
            self._cursors.pop(stream, None)
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


def _parse(message: Mapping[str, Any]) -> dict[str, Any]:
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
        raise ProtocolError(f"since must be an object of at most {MAX_SINCE} stream ids to seqs")
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
    await hub.join(client.subscriber)
    pump = asyncio.create_task(client.pump())
    slow = False
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
        slow = True
    finally:
        hub.subscribers.discard(client.subscriber)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            slow = await _ended(pump) or slow
    if slow:
        await _drop(ws)


async def _ended(pump: asyncio.Task[None]) -> bool:
    """Wait for the pump: True if it gave up on a slow client; logged if a bug killed it."""
    try:
        await pump
    except SlowClient:
        return True
    except (WebSocketDisconnect, OSError):
        pass
    except Exception:
        logger.exception("waddle: the WebSocket sender failed")
    return False


async def _drop(ws: WebSocket) -> None:
    """End a slow client's connection now, discarding what it was not sent.

    A close frame would wait behind the messages the client does not read, and a
    graceful close of the transport waits for its buffer to drain: the connection and
    its buffers would stay for good. So the transport is aborted (``ABORT``); under an
    ASGI server without that extension, a close bounded in time is the best there is.
    """
    abort = ws.scope.get("extensions", {}).get(ABORT)
    if abort is not None:
        abort()
        return
    with contextlib.suppress(asyncio.TimeoutError, WebSocketDisconnect, RuntimeError):
        await asyncio.wait_for(ws.close(1008, "too slow"), 1.0)


class AbortableWebSocketProtocol(AutoWebSocketsProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's WebSocket protocol, plus the ``ABORT`` extension in each connection's
    scope: its transport's ``abort``. ``waddle serve`` runs uvicorn with it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.app = _with_abort(self.app, transport.abort)  # type: ignore[attr-defined,has-type]


def _with_abort(app: ASGIApp, abort: Callable[[], None]) -> ASGIApp:
    async def with_abort(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = {**(scope.get("extensions") or {}), ABORT: abort}
        await app({**scope, "extensions": extensions}, receive, send)

    return with_abort

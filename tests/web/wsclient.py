"""A WebSocket test client on the ``websockets`` package: collect events per stream."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RECV_TIMEOUT_S = 30.0


@dataclass
class Received:
    """What a client got: events per stream in arrival order, and control messages."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    control: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def seqs(self, stream: str) -> list[int]:
        return [event["seq"] for event in self.events.get(stream, [])]

    def take(self, message: dict[str, Any]) -> None:
        if "events" in message:
            assert message.get("type") == "events" and "stream" in message
            self.events.setdefault(message["stream"], []).extend(message["events"])
            now = time.time()
            self.arrived += [(now, event) for event in message["events"]]
        else:
            self.control.append(message)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.control if m.get("type") == kind]


def open_client(url: str, **kwargs: Any) -> Any:
    return connect(url, open_timeout=10, close_timeout=2, **kwargs)


def open_stalled_client(url: str, host: str, port: int) -> Any:
    """A client with tiny buffers (socket and message queue): it stalls soon when not read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, port))
    sock.setblocking(False)
    return connect(url, sock=sock, open_timeout=10, close_timeout=2, max_queue=1)


async def send(ws: ClientConnection, message: Any) -> None:
    await ws.send(message if isinstance(message, (str, bytes)) else orjson.dumps(message).decode())


async def recv(ws: ClientConnection, timeout: float = RECV_TIMEOUT_S) -> dict[str, Any]:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(
    ws: ClientConnection,
    done: Callable[[Received], bool],
    received: Received | None = None,
    timeout: float = RECV_TIMEOUT_S,
) -> Received:
    """Read messages until ``done(received)``; fails on timeout or a closed connection."""
    received = received or Received()
    deadline = time.monotonic() + timeout
    while not done(received):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(
                f"timed out; got {received.control[-5:]} and "
                f"{ {s: len(e) for s, e in received.events.items()} }"
            )
        try:
            received.take(await recv(ws, remaining))
        except ConnectionClosed as exc:
            raise AssertionError(f"connection closed: {exc}") from exc
    return received


async def subscribe(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    """Subscribe and return the ``subscribed`` acknowledgement."""
    await send(ws, {"op": "subscribe", **fields})
    while True:
        message = await recv(ws)
        if message.get("type") == "subscribed":
            return message
        assert message.get("type") in ("heartbeat",), message

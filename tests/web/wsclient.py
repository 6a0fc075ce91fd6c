"""WebSocket test clients: one on the ``websockets`` package that collects events per
stream, and a raw socket that speaks just enough of RFC 6455 to subscribe and stall."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
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


def raw_client(host: str, port: int, rcvbuf: int = 4096) -> socket.socket:
    """A TCP socket upgraded to a WebSocket by hand, with a tiny receive buffer.

    Nothing is read after the handshake unless the test does it, so the server's send
    buffer fills as it would for a client that stopped reading.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(RECV_TIMEOUT_S)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(1)
        assert data, f"the server closed during the handshake: {head!r}"
        head += data
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def text_frame(message: Any) -> bytes:
    """One masked text frame, as a client must send it."""
    payload = orjson.dumps(message)
    assert len(payload) < 1 << 16, "a longer frame needs the 64-bit length form"
    mask = os.urandom(4)
    if len(payload) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_to_end(sock: socket.socket) -> int:
    """Read until the server's end of the connection (EOF or reset); the bytes read."""
    total = 0
    while True:
        try:
            data = sock.recv(1 << 16)
        except ConnectionResetError:
            return total
        if not data:
            return total
        total += len(data)

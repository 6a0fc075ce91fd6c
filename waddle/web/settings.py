"""What one server instance is configured with; validated once, when it is built."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from waddle.errors import UsageError
from waddle.paths import duckdb_path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BLOB_BYTES = 512 * 1024 * 1024
DEFAULT_POLL_INTERVAL = 0.05
DEFAULT_WS_QUEUE_EVENTS = 50_000
DEFAULT_WS_SEND_TIMEOUT = 10.0
DEFAULT_WS_HEARTBEAT = 15.0
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Settings:
    """One server: where its data lives, who may talk to it, and its limits.

    ``poll_interval`` is the tail loop's sleep when the log has nothing new (the live
    latency floor). ``ws_queue_events`` bounds what a WebSocket client may have waiting
    before its backlog is dropped and replayed from the log; ``ws_send_timeout`` is how
    long one send may stall before the client is disconnected. ``max_blob_bytes`` bounds
    one ``PUT /blobs/{sha256}`` body (``max_body_bytes`` bounds ``/ingest``). ``lake``
    adds the finished runs of a Parquet lake to what the read endpoints see
    (``waddle.store.lake``).
    """

    root: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    db_path: Path | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL
    ws_queue_events: int = DEFAULT_WS_QUEUE_EVENTS
    ws_send_timeout: float = DEFAULT_WS_SEND_TIMEOUT
    ws_heartbeat: float = DEFAULT_WS_HEARTBEAT
    relays: tuple[str, ...] = ()
    relay_token: str | None = None
    lake: Path | None = None

    def __post_init__(self) -> None:
        from waddle.consumers.relay.client import check_url

        for url in self.relays:
            check_url(url)
        if self.token is not None and not self.token:
            raise UsageError("the token is empty: pass a non-empty --token or unset WADDLE_TOKEN")
        if self.max_body_bytes <= 0 or self.max_blob_bytes <= 0:
            raise UsageError("the request body limits must be positive numbers of bytes")
        if not 0 < self.poll_interval <= 60:
            raise UsageError("the poll interval must be between 0 and 60 seconds")
        if self.ws_queue_events < 1 or self.ws_send_timeout <= 0 or self.ws_heartbeat <= 0:
            raise UsageError("WebSocket queue, send timeout and heartbeat must be positive")
        if self.token is None and not is_loopback(self.host):
            raise UsageError(
                f"refusing to bind {self.host!r} without a token: anyone who can reach it could "
                "read and write your runs. Pass --token (or set WADDLE_TOKEN), or bind 127.0.0.1."
            )

    @property
    def database(self) -> Path:
        return self.db_path or duckdb_path(self.root)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_from_env(value: str | None) -> str | None:
    """``--token`` wins; else ``$WADDLE_TOKEN``; an unset or empty variable means none."""
    return value if value is not None else (os.environ.get("WADDLE_TOKEN") or None)

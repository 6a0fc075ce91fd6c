"""Helpers of the relay, sync and central-host tests: relays and central hosts as real
processes on loopback, and reading logs and tables back for comparison."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.helpers import eventually
from tests.web.conftest import Server, start_server
from waddle.consumers.lag import last_seq
from waddle.consumers.registry import StateStore
from waddle.consumers.relay.consumer import relay_name
from waddle.eventlog.reader import LogReader, Offset
from waddle.eventlog.segment import log_dir

CONSUME = [
    sys.executable,
    "-c",
    "import sys, waddle.cli.parser; sys.exit(waddle.cli.parser.consume_main())",
]
WADDLE = [sys.executable, "-c", "import sys, waddle.cli.parser; sys.exit(waddle.cli.parser.main())"]

# Per run and key: count and checksums of the metrics rows (as the exactly-once test does).
CHECKSUMS = """
SELECT run_id, key, count(*), sum(hash(step, ts, value)), count(value), sum(isnan(value)::INT)
FROM metrics GROUP BY run_id, key ORDER BY run_id, key
"""


def relay_argv(root: Path, url: str, token: str | None = None) -> list[str]:
    """``waddle-consume --relay URL``: the DuckDB writer and a relay to ``url``."""
    argv = [*CONSUME, "--dir", str(root), "--relay", url]
    return argv + (["--token", token] if token else []) + ["--interval", "0.02"]


def sync_argv(root: Path, url: str, *args: str) -> list[str]:
    """``waddle sync URL --dir root ...``."""
    return [*WADDLE, "sync", url, "--dir", str(root), *args]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_") and k != "RANK"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Relay:
    """A relay process; its stderr goes to a file that the test can read."""

    def __init__(self, root: Path, url: str, token: str | None = None) -> None:
        self.root = root
        self.url = url
        self.token = token
        self.log = root.parent / f"relay-{time.monotonic_ns()}.stderr"
        root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                relay_argv(root, url, token),
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=clean_env(),
            )

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the relay did not stop within {timeout}s:\n{self.stderr()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def central(root: Path, port: int, token: str | None = None) -> Server:
    """``waddle serve`` on a fixed loopback port, so a relay's URL outlives a restart."""
    return start_server(root, "--port", str(port), "--poll-interval", "0.02", token=token)


def stream_events(root: Path, stream: str) -> list[dict[str, Any]]:
    """Every event of a stream, read with the reader from the start."""
    reader = LogReader(root)
    offset, events = Offset(), []
    while True:
        batch = reader.read(stream, offset)
        if batch.offset == offset:
            return events
        events += batch.events
        offset = batch.offset


def log_events(root: Path) -> dict[str, list[dict[str, Any]]]:
    return {stream: stream_events(root, stream) for stream in LogReader(root).streams()}


def last_seqs(root: Path) -> dict[str, int]:
    return {s: last_seq(log_dir(root) / s) for s in LogReader(root).streams()}


def relayed(root: Path, url: str) -> dict[str, int]:
    """The last seq per stream the relay to ``url`` has committed (published)."""
    return {s: o.seq for s, o in StateStore(root).load(relay_name(url)).items()}


def caught_up(root: Path, name: str, expected: dict[str, int]) -> bool:
    """Whether consumer ``name`` of ``root`` has published every seq of ``expected``."""
    offsets = StateStore(root).load(name)
    return all(offsets.get(s, Offset()).seq >= seq for s, seq in expected.items())


def checksums(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(CHECKSUMS).fetchall()


def reference_db(root: Path, db: Path) -> Path:
    """The tables a local DuckDB writer makes of ``root``'s log: what the host must hold."""
    import threading

    from waddle.consumers.base import run_consumer
    from waddle.consumers.duckdb.writer import DuckDBWriter

    writer = DuckDBWriter(root, db, durable=False, snapshot_interval=0)
    run_consumer(writer, root, threading.Event(), once=True)
    return db


def wait_delivered(root: Path, server: Server, timeout: float) -> None:
    """Until the relay committed every event of ``root`` and the host's tables hold them."""
    expected = last_seqs(root)
    eventually(lambda: relayed(root, server.url) == expected, timeout, "the relay to finish")
    eventually(lambda: caught_up(server.root, "duckdb", expected), timeout, "the host's tables")


def kill_under_load(
    load: subprocess.Popen[bytes],
    relay: Relay,
    server: Server,
    faults: Sequence[str],
    pause: Callable[[], float],
    *,
    load_timeout: float,
    deliver_timeout: float,
) -> None:
    """SIGKILL and restart the central ``host`` or the ``relay``, one fault after each
    pause, while ``load`` logs; then wait until all it logged is delivered and check
    that the last relay and host stop cleanly. Every process is gone on return."""
    relays = [relay]
    try:
        for fault in faults:
            time.sleep(pause())
            if fault == "host":
                server.stop(signal.SIGKILL)
                server = central(server.root, server.port, server.token)
            else:
                relay.stop(signal.SIGKILL)
                relay = Relay(relay.root, relay.url, relay.token)
                relays.append(relay)
        _, err = load.communicate(timeout=load_timeout)
        assert load.returncode == 0, err.decode()
        wait_delivered(relay.root, server, deliver_timeout)
        assert relay.stop() == 0, relay.stderr()
        assert server.stop() == 0, server.stderr()
    finally:
        for each in relays:
            each.stop(signal.SIGKILL)
        server.stop(signal.SIGKILL)

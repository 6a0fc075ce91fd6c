"""Fixtures of the web tests: a real ``waddle serve`` process on an ephemeral loopback
port, a small HTTP client on ``http.client``, and helpers to wait for the tables."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from tests.helpers import eventually

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 20.0


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Address:
    """Host, port and WebSocket URL of a server, from the ``url`` it printed."""

    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"


@dataclass
class Server(Address):
    """A ``waddle serve`` child process; ``url`` is what it printed."""

    root: Path
    proc: subprocess.Popen[bytes]
    url: str
    token: str | None
    stderr_path: Path
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> Reply:
        import http.client

        sent = dict(headers or {})
        if auth and self.token and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self.token}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
        try:
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def get_json(self, path: str) -> Any:
        reply = self.get(path)
        assert reply.status == 200, f"GET {path}: {reply.status} {reply.body[:500]!r}"
        return reply.json()

    def ingest(
        self,
        stream: str,
        payload: Any,
        *,
        ndjson: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        if isinstance(payload, bytes):
            body = payload
        elif ndjson:
            body = b"".join(orjson.dumps(event) + b"\n" for event in payload)
        else:
            body = orjson.dumps(payload)
        sent = {"Content-Type": "application/x-ndjson" if ndjson else "application/json"}
        sent.update(headers or {})
        return self.request("POST", f"/ingest?stream={stream}", body, sent)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"waddle serve did not stop within {STOP_TIMEOUT_S}s; {self.stderr()}")
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_server(root: Path, *args: str, token: str | None = None) -> Server:
    """Start ``waddle serve --dir root --port 0`` and wait for the URL it prints."""
    root.mkdir(parents=True, exist_ok=True)
    stderr_path = root.parent / f"serve-{root.name}-{time.monotonic_ns()}.stderr"
    command = [sys.executable, "-m", "waddle", "serve", "--dir", str(root)]
    command += ["--port", "0", *args]
    if token:
        command += ["--token", token]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_") and k != "RANK"}
    env["PYTHONUNBUFFERED"] = "1"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            if b" at http://" in line:
                url = line.decode().rsplit(" at ", 1)[1].strip()
                return Server(root, proc, url.split("?", 1)[0], token, stderr_path)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    pytest.fail(f"waddle serve printed no URL; stdout {seen!r}; {stderr_path.read_text()}")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(*args, token=None, root=None)`` starts a server; all are stopped after."""
    started: list[Server] = []

    def start(*args: str, token: str | None = None, root: Path | None = None) -> Server:
        server = start_server(root or tmp_path / f"root{len(started)}", *args, token=token)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for a whole module (tests use streams of their own)."""
    server = start_server(tmp_path_factory.mktemp("shared") / "root")
    yield server
    assert server.stop() == 0, server.stderr()


def wait_for_run(server: Server, run_id: str, status: str | None = "finished") -> dict[str, Any]:
    """The run from ``/api/runs/{id}`` once the DuckDB writer has it (with ``status``)."""

    def check() -> dict[str, Any] | None:
        reply = server.get(f"/api/runs/{run_id}")
        if reply.status != 200:
            return None
        run = reply.json()
        return run if status is None or run["status"] == status else None

    return eventually(check, what=f"run {run_id} in the tables")


def log_fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``<root>/log`` with a digest of its bytes (locks left out)."""
    log = root / "log"
    found = {}
    for path in sorted(log.rglob("*")) if log.exists() else []:
        if path.is_file() and path.name != ".lock":
            found[str(path.relative_to(log))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            found[str(path.relative_to(log)) + "/"] = "dir"
    return found

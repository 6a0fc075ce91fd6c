"""A central host whose disk fails an fsync, as a real process: the relay's events of that
stream are never acknowledged while that host runs, not even once fsync works again
(Linux reports a writeback error once: fsyncgate); after a restart they arrive exactly
once."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.consumers.logs import write_run
from tests.consumers.relay.support import (
    central,
    checksums,
    free_port,
    log_events,
    reference_db,
    wait_delivered,
)
from tests.helpers import eventually
from waddle.consumers.base import run_consumer
from waddle.consumers.relay.client import Backoff
from waddle.consumers.relay.consumer import RelayConsumer

# Loaded by the host process at start (sitecustomize): while the flag file exists, the
# fsync and syncfs of the stream it names fail with EIO; every part's answer is noted.
FAULT = """
import errno, os, pathlib
from waddle.web import ingest_log

_flag = pathlib.Path(os.environ["FSYNC_FAULT_FLAG"])
_seen = pathlib.Path(os.environ["FSYNC_FAULT_SEEN"])
_fsync, _syncfs, _append_parts = os.fsync, ingest_log._SYNCFS, ingest_log.IngestLog.append_parts


def _failing(fd):
    if not _flag.exists():
        return False
    return pathlib.Path(os.readlink(f"/proc/self/fd/{fd}")).parent.name == _flag.read_text()


def fsync(fd):
    if _failing(fd):
        raise OSError(errno.EIO, "Input/output error")
    _fsync(fd)


def syncfs(fd):
    return -1 if _flag.exists() else _syncfs(fd)


def append_parts(self, parts):
    results = _append_parts(self, parts)
    with _seen.open("a") as seen:
        for (stream, _, _), result in zip(parts, results):
            seen.write(f"{stream} {type(result).__name__}\\n")
    return results


os.fsync = fsync
ingest_log._SYNCFS = syncfs
ingest_log.IngestLog.append_parts = append_parts
"""


def inject_fsync_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: str
) -> tuple[Path, Path]:
    """Hosts started from here on fail ``stream``'s fsync while the returned flag file
    exists (``FAULT``); the other file gets a line per refusal."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAULT)
    flag, seen = tmp_path / "failing", tmp_path / "seen"
    flag.write_text(stream)
    seen.touch()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FSYNC_FAULT_FLAG", str(flag))
    monkeypatch.setenv("FSYNC_FAULT_SEEN", str(seen))
    return flag, seen


def relaying(root: Path, url: str) -> tuple[RelayConsumer, threading.Thread, threading.Event]:
    """A relay of ``root`` to ``url`` running in a thread, fast backoff and polls."""
    stop = threading.Event()
    relay = RelayConsumer(root, url, stop=stop, backoff=Backoff(base=0.02, cap=0.2))
    thread = threading.Thread(
        target=run_consumer, args=(relay, root, stop), kwargs={"interval": 0.02}, daemon=True
    )
    thread.start()
    return relay, thread, stop


def test_a_stream_whose_fsync_failed_arrives_exactly_once_after_the_host_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "machine"
    write_run(root, "good", 300)
    bad = write_run(root, "bad", 300)
    flag, seen = inject_fsync_fault(tmp_path, monkeypatch, bad)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = central(tmp_path / "central", port)
    _, thread, stop = relaying(root, url)
    try:
        eventually(
            lambda: f"fsync of stream {bad} failed: its events" in server.stderr(), 60, "the error"
        )
        flag.unlink()  # the disk works again: that proves nothing about what it lost

        def answers() -> list[str]:
            return [
                line.split()[1] for line in seen.read_text().splitlines() if line.split()[0] == bad
            ]

        before = len(answers())
        eventually(lambda: len(answers()) >= before + 3 or "Outcome" in answers(), 30, "resends")
        assert set(answers()) == {"WriteFailed"}, "acknowledged after EIO"
        assert server.stderr().count(f"fsync of stream {bad} failed: its events") == 1
        assert server.stop() == 0, server.stderr()
        server = central(tmp_path / "central", port)  # the operator restarts it
        wait_delivered(root, server, 60)
        assert log_events(server.root) == log_events(root)
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    reference = checksums(reference_db(root, tmp_path / "reference.duckdb"))
    assert checksums(server.root / "waddle.duckdb") == reference

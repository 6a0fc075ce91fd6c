"""``waddle sync URL``: a real process against a real host (down, up, refusing), on runs
that are still writing, and its progress bar."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.consumers.logs import open_stream, run_fields, write_run
from tests.consumers.relay.support import (
    central,
    clean_env,
    free_port,
    last_seqs,
    log_events,
    relayed,
    sync_argv,
)
from tests.web.conftest import Server, log_fingerprint
from waddle.consumers.registry import StateStore
from waddle.consumers.relay.consumer import relay_name
from waddle.consumers.relay.sync import sync

TOKEN = "lab-token"


def run_sync(root: Path, url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        sync_argv(root, url, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Server]:
    server = central(tmp_path / "central", free_port(), token=TOKEN)
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    write_run(root, "one", 2000, segment_bytes=16 * 1024)
    write_run(root, "two", 500)
    return root


def test_host_down_exits_nonzero_within_its_timeout_and_loses_nothing(root: Path) -> None:
    before = log_fingerprint(root)
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    done = run_sync(root, url, "--timeout", "2")
    took = time.monotonic() - began
    assert done.returncode == 1, done.stderr
    assert took < 2 + 8, f"took {took:.1f}s"
    assert "could not reach" in done.stderr and "nothing was lost" in done.stderr
    assert log_fingerprint(root) == before
    assert relayed(root, url) == {}


def test_host_up_gets_everything_then_a_second_sync_sends_nothing(root: Path, host: Server) -> None:
    done = run_sync(root, host.url, "--token", TOKEN)
    assert done.returncode == 0, done.stderr
    assert "relayed 2,506 events" in done.stderr
    assert log_events(host.root) == log_events(root)
    assert relayed(root, host.url) == last_seqs(root)
    held = log_fingerprint(host.root)
    again = run_sync(root, host.url, "--token", TOKEN)
    assert again.returncode == 0, again.stderr
    assert "nothing new" in again.stderr
    assert log_fingerprint(host.root) == held


def test_a_wrong_token_exits_2_and_commits_nothing(root: Path, host: Server) -> None:
    done = run_sync(root, host.url, "--token", "not-the-token")
    assert done.returncode == 2, done.stderr
    assert "token" in done.stderr and "nothing was lost" in done.stderr
    assert relayed(root, host.url) == {}
    assert log_events(host.root) == {}


def test_a_running_run_syncs_in_parts_with_nothing_twice(tmp_path: Path, host: Server) -> None:
    root = tmp_path / "w"
    writer = open_stream(root, "live", segment_bytes=8 * 1024)
    try:
        writer.append("run", run_fields("live"))
        for step in range(300):
            writer.append("metrics", {"step": step, "data": {"loss": 1 / (step + 1)}})
        assert sync(root, host.url, token=TOKEN, out=io.StringIO()) == 0
        assert [e["seq"] for e in log_events(host.root)["live"]] == list(range(301))
        for step in range(300, 700):
            writer.append("metrics", {"step": step, "data": {"loss": 1 / (step + 1)}})
        done = run_sync(root, host.url, "--token", TOKEN)
        assert done.returncode == 0, done.stderr
        assert "relayed 400 events" in done.stderr
    finally:
        writer.close()
    assert log_events(host.root) == log_events(root)


def test_the_progress_bar_shows_events_bytes_rate_and_eta(root: Path, host: Server) -> None:
    out = io.StringIO()
    assert sync(root, host.url, token=TOKEN, out=out, tty=True) == 0
    text = out.getvalue()
    bar = text.split("\r")[-1]
    assert bar.startswith("syncing [########################] 100%"), text
    for part in ("2,506/2,506 events", "MiB", "events/s", "ETA"):
        assert part in bar
    assert text.endswith("s\n") and "relayed 2,506 events" in text


def test_refuses_while_a_relay_to_that_host_runs(root: Path, host: Server) -> None:
    with StateStore(root).lock(relay_name(host.url)):
        out = io.StringIO()
        assert sync(root, host.url, token=TOKEN, out=out) == 1
    assert "already running" in out.getvalue()
    assert log_events(host.root) == {}

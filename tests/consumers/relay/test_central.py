"""Two hosts on loopback: machines relaying their logs to a central ``waddle serve``, with
real processes killed and restarted, and the central tables compared with the producers'
own events (count and checksum per run and key; event for event in the logs)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.consumers.relay.support import (
    Relay,
    central,
    checksums,
    clean_env,
    free_port,
    kill_under_load,
    log_events,
    reference_db,
    relayed,
    wait_delivered,
)
from tests.helpers import eventually
from tests.web.conftest import start_server
from waddle.eventlog.segment import log_dir
from waddle.eventlog.writer import StreamWriter

LOAD = Path(__file__).parents[1] / "load.py"
RUNS = 4
EVENTS = 25_000  # per run: 100,000 metrics events in all
TOKEN = "central-token"


def producer(root: Path, runs: int, events: int) -> subprocess.Popen[bytes]:
    """``tests/consumers/load.py``: real ``waddle.init`` runs logging in chunks."""
    args = [str(root), str(runs), str(events), str(256 * 1024), "500", "0.08"]
    return subprocess.Popen(
        [sys.executable, str(LOAD), *args], stderr=subprocess.PIPE, env=clean_env()
    )


@pytest.mark.slow
def test_central_host_killed_twice_and_relay_restarted_ends_exact(tmp_path: Path) -> None:
    seed = int(time.time())
    rng = random.Random(seed)
    root = tmp_path / "machine"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load = producer(root, RUNS, EVENTS)
    relay = Relay(root, url, TOKEN)  # the central host is not up yet
    time.sleep(rng.uniform(0.5, 1.5))
    server = central(tmp_path / "central", port, TOKEN)
    kill_under_load(
        load,
        relay,
        server,
        ("host", "relay", "host"),
        lambda: rng.uniform(0.4, 1.2),
        load_timeout=120,
        deliver_timeout=90,
    )
    assert len(list(root.glob("log/*/*.ndjson"))) > 2 * RUNS, "segments should roll over"
    assert log_events(server.root) == log_events(root), f"seed {seed}"
    expected = checksums(reference_db(root, tmp_path / "reference.duckdb"))
    assert checksums(server.root / "waddle.duckdb") == expected, f"seed {seed}"
    counts = {(run, key): count for run, key, count, *_ in expected}
    assert counts[("load0", "loss")] == EVENTS and len({run for run, _ in counts}) == RUNS


def relay_cpu_seconds(relay: Relay) -> float:
    times = psutil.Process(relay.proc.pid).cpu_times()
    return times.user + times.system


def test_a_wrong_token_is_reported_once_and_the_right_one_delivers_everything(
    tmp_path: Path,
) -> None:
    root = tmp_path / "machine"
    load = producer(root, 2, 2000)
    _, err = load.communicate(timeout=60)
    assert load.returncode == 0, err.decode()
    server = central(tmp_path / "central", free_port(), TOKEN)
    try:
        wrong = Relay(root, server.url, "not-the-token")
        eventually(lambda: "token" in wrong.stderr(), 30, "the relay to report the token")
        before = relay_cpu_seconds(wrong)
        time.sleep(1.5)
        assert relay_cpu_seconds(wrong) - before < 0.5, "a refused relay must not spin"
        assert wrong.proc.poll() is None, "a refused relay keeps running (other consumers go on)"
        assert wrong.stderr().count("refused this relay") == 1, wrong.stderr()
        assert relayed(root, server.url) == {} and log_events(server.root) == {}
        wrong.stop()
        right = Relay(root, server.url, TOKEN)
        wait_delivered(root, server, 60)
        assert right.stop() == 0, right.stderr()
        assert log_events(server.root) == log_events(root)
    finally:
        server.stop()


def write_machine(root: Path, host: str, runs: int, steps: int) -> list[str]:
    """Runs as a producer on ``host`` writes them (the context names the machine)."""
    ids = [f"{host}-run{index}" for index in range(runs)]
    for run_id in ids:
        writer = StreamWriter(log_dir(root) / run_id, segment_bytes=64 * 1024)
        writer.append("run", run_event(run_id, host))
        for step in range(steps):
            writer.append("metrics", {"step": step, "data": {"loss": 1 / (step + 1)}})
        writer.append("finish", {"exit_code": 0, "status": "finished"})
        writer.close()
    return ids


def run_event(run_id: str, host: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "project": "fleet",
        "name": run_id,
        "config": {"lr": 0.1},
        "tags": [],
        "notes": None,
        "group": None,
        "job_type": None,
        "context": {"host": host, "started_at": time.time()},
    }


def test_two_machines_relay_to_one_central_host(tmp_path: Path) -> None:
    machines = {"gpu-a": tmp_path / "gpu-a", "gpu-b": tmp_path / "gpu-b"}
    runs = {host: write_machine(root, host, 3, 3000) for host, root in machines.items()}
    server = central(tmp_path / "central", free_port(), TOKEN)
    relays = [Relay(root, server.url, TOKEN) for root in machines.values()]
    try:
        for root in machines.values():
            wait_delivered(root, server, 60)
        listed = {run["run_id"]: run for run in server.get_json("/api/runs")["runs"]}
        for host, ids in runs.items():
            for run_id in ids:
                assert listed[run_id]["status"] == "finished"
                run = server.get_json(f"/api/runs/{run_id}")
                assert run["context"]["host"] == host
        central_log = log_events(server.root)
        for root in machines.values():
            for stream, events in log_events(root).items():
                assert central_log.pop(stream) == events
        assert central_log == {}
    finally:
        for relay in relays:
            assert relay.stop() == 0, relay.stderr()
        server.stop()


def test_serve_with_relay_shows_runs_locally_and_forwards_them(tmp_path: Path) -> None:
    import waddle.cli.parser

    if "--relay" not in _serve_help(waddle.cli.parser):
        pytest.skip("waddle serve --relay is not wired into the CLI yet")
    server = central(tmp_path / "central", free_port(), TOKEN)
    try:
        machine = tmp_path / "laptop"
        ids = write_machine(machine, "laptop", 1, 500)
        local = start_server(machine, "--relay", server.url, "--relay-token", TOKEN)
        try:
            wait_delivered(machine, server, 60)
            assert local.get_json(f"/api/runs/{ids[0]}")["status"] == "finished"
            assert server.get_json(f"/api/runs/{ids[0]}")["context"]["host"] == "laptop"
        finally:
            assert local.stop() == 0, local.stderr()
    finally:
        server.stop()


def _serve_help(cli: Any) -> str:
    parser = cli.build_parser()
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        if "serve" in action.choices:
            return action.choices["serve"].format_help()
    return ""

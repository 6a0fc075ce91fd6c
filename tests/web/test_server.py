"""``waddle serve`` as a process: signals stop it cleanly with offsets committed;
``--demo`` and ``waddle demo``; a clear error when it cannot start; a full disk survived."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

import waddle
from tests.consumers.logs import write_run
from tests.helpers import raw_events, raw_log
from tests.small_disk import same_as_one_clean_pass, small_disk
from waddle.web.server import url_of

from .conftest import Server, eventually, start_server, wait_for_run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_it_cleanly_with_offsets_committed(serve: Any, sig: int) -> None:
    server: Server = serve()
    run = waddle.init(project="stop", root=server.root, id="stoprun", system_metrics=False)
    for step in range(300):
        run.log({"loss": float(step)})
    run.finish()
    wait_for_run(server, "stoprun")
    assert (
        server.ingest("relayedrun", [{"seq": 0, "ts": 1.0, "type": "config", "config": {}}]).status
        == 200
    )
    assert server.stop(sig) == 0, server.stderr()
    last = len(raw_events(raw_log(server.root, "stoprun"))) - 1
    state = orjson.loads((server.root / "state" / "duckdb.json").read_bytes())
    assert state["offsets"]["stoprun"]["seq"] == last
    with duckdb.connect(str(server.root / "waddle.duckdb"), read_only=True) as con:
        (seq,) = con.execute("SELECT seq FROM _waddle.offsets WHERE stream = 'stoprun'").fetchone()
        (status,) = con.execute("SELECT status FROM runs WHERE run_id = 'stoprun'").fetchone()
    assert (seq, status) == (last, "finished")
    assert "Traceback" not in server.stderr()
    # The ingest writer let go of its stream: a local producer can continue it.
    waddle.init(project="stop", root=server.root, id="relayedrun", resume=True).finish()


def test_serve_demo_shows_a_working_url(serve: Any) -> None:
    server: Server = serve("--demo")

    def both_runs() -> list[dict[str, Any]] | None:
        runs = [r for r in server.get_json("/api/runs")["runs"] if r["last_step"]]
        return runs if len(runs) == 2 else None

    runs = eventually(both_runs, what="the finished demo run and the live one")
    assert {r["project"] for r in runs} == {"demo"}
    assert sorted(r["status"] for r in runs) == ["finished", "running"]
    live = next(r for r in runs if r["status"] == "running")

    def advanced() -> bool:
        now = server.get_json(f"/api/runs/{live['run_id']}")["last_step"]
        return now > live["last_step"]

    eventually(advanced, what="the live demo run to log more steps")
    assert server.get("/").status == 200
    assert server.stop(signal.SIGTERM) == 0, server.stderr()
    statuses = {}
    for stream in (server.root / "log").iterdir():
        finish = [e for e in raw_events(raw_log(server.root, stream.name)) if e["type"] == "finish"]
        statuses[stream.name] = [e["status"] for e in finish]
    assert statuses[live["run_id"]] == ["killed"]
    assert sorted(s for each in statuses.values() for s in each) == ["finished", "killed"]


def test_serve_demo_on_a_busy_folder_writes_no_demo_run(serve: Any) -> None:
    server: Server = serve()
    result = run_command("serve", "--demo", "--dir", str(server.root), "--port", "0")
    assert result.returncode == 1
    assert "already runs the DuckDB writer" in result.stderr and "Traceback" not in result.stderr
    assert not (server.root / "log").exists() or not any((server.root / "log").iterdir())


def test_demo_command_writes_a_run(tmp_path: Path) -> None:
    result = run_command("demo", "--dir", str(tmp_path), "--steps", "20")
    assert result.returncode == 0, result.stderr
    assert "waddle serve --dir" in result.stdout
    (stream,) = [p.name for p in (tmp_path / "log").iterdir()]
    events = raw_events(raw_log(tmp_path, stream))
    assert [e["type"] for e in events][-2:] == ["summary", "finish"]
    assert sum(e["type"] == "metrics" for e in events) == 20


def test_a_busy_port_is_a_clear_error(serve: Any, tmp_path: Path) -> None:
    server: Server = serve()
    result = run_command("serve", "--dir", str(tmp_path / "other"), "--port", str(server.port))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr and "--port" in result.stderr


def test_a_second_server_on_the_same_folder_is_refused(serve: Any) -> None:
    server: Server = serve()
    result = run_command("serve", "--dir", str(server.root), "--port", "0")
    assert result.returncode == 1
    assert "already runs the DuckDB writer" in result.stderr and "Traceback" not in result.stderr
    assert server.get("/info").status == 200


def test_url_of() -> None:
    assert url_of("127.0.0.1", 8080, None) == "http://127.0.0.1:8080/"
    assert url_of("::1", 9, "t") == "http://[::1]:9/?token=t"


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "waddle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_full_disk_answers_503_then_catches_up_exactly_once(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", tmp_path / "log") as disk:
        server = start_server(disk.root)
        try:
            write_run(disk.root, "before", 50)
            wait_for_run(server, "before")
            disk.fill()
            write_run(disk.root, "during", 3000)

            def unavailable() -> Any:
                reply = server.get("/api/runs")
                return reply if reply.status == 503 else None

            reply = eventually(unavailable, what="a 503 while the disk is full")
            assert reply.json()["error"] == "store_unavailable", reply.body
            assert server.get("/info").json()["error"] == "store_unavailable"
            failed = eventually(
                lambda: [line for line in server.stderr().splitlines() if "retries in" in line],
                what="the failure in the server's log while the disk is full",
            )
            assert "No space left" in failed[0] and str(disk.root) in failed[0], failed
            assert "free disk space" in failed[0], failed
            assert server.proc.poll() is None
            disk.free()
            wait_for_run(server, "during")
            assert server.get_json("/info")["projects"]
        finally:
            code = server.stop()
        assert code == 0, server.stderr()
        assert "Traceback" not in server.stderr()
        tables = same_as_one_clean_pass(disk.root, tmp_path / "reference.duckdb")
    assert len(tables["metrics"]) == 3 * (50 + 3000)

"""Exactly-once under faults: ``waddle-consume`` is killed with SIGKILL at random
moments while a real producer writes 200,000 events across several streams and segment
roll-overs, and restarted each time; the tables it ends with equal those of one
uninterrupted run (per run and key: count and checksum; the other tables row for row)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.consumers.logs import CONSUME, read_tables

HERE = Path(__file__).parent
RUNS = 4
EVENTS = 50_000
LOAD = [str(256 * 1024), "500", "0.06"]  # segment bytes, steps per chunk, pause

CHECKSUMS = """
SELECT run_id, key, count(*), sum(hash(step, ts, value)), count(value), sum(isnan(value)::INT)
FROM {db}.metrics GROUP BY run_id, key ORDER BY run_id, key
"""


def consume(root: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CONSUME, "--dir", str(root), "--interval", "0.02", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def catch_up(root: Path, *args: str) -> None:
    done = subprocess.run(
        [*CONSUME, "--dir", str(root), "--once", *args], capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    root = tmp_path / "w"
    seed = int(time.time())
    rng = random.Random(seed)
    producer_log = tmp_path / "producer.log"
    with open(producer_log, "wb") as log:
        producer = subprocess.Popen(
            [
                sys.executable,
                str(HERE.parent / "load.py"),
                str(root),
                str(RUNS),
                str(EVENTS),
                *LOAD,
            ],
            stderr=log,
        )
    kills = 0
    daemon = None
    try:
        while producer.poll() is None or kills < 12:
            daemon = consume(root)
            time.sleep(rng.uniform(0.05, 1.5))
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGKILL)
                kills += 1
            _, err = daemon.communicate(timeout=30)
            assert daemon.returncode in (-signal.SIGKILL, 0), err.decode()
        assert producer.wait(timeout=60) == 0, producer_log.read_text()
    finally:
        for process in (producer, daemon):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate(timeout=30)
    segments = len(list(root.glob("log/*/*.ndjson")))
    assert segments > 4 * RUNS, "the producer should have rolled segments over"

    catch_up(root)
    catch_up(root, "--duckdb", str(tmp_path / "reference.duckdb"))

    con = duckdb.connect()
    con.execute(f"ATTACH '{root / 'waddle.duckdb'}' AS killed (READ_ONLY)")
    con.execute(f"ATTACH '{tmp_path / 'reference.duckdb'}' AS whole (READ_ONLY)")
    killed = con.execute(CHECKSUMS.format(db="killed")).fetchall()
    whole = con.execute(CHECKSUMS.format(db="whole")).fetchall()
    assert killed == whole, f"seed {seed}, {kills} kills"
    counts = {(run, key): count for run, key, count, *_ in whole}
    assert counts[("load0", "loss")] == EVENTS
    assert counts[("load3", "opt.lr")] == EVENTS
    assert sum(nans for *_, nans in whole) == RUNS * (EVENTS // 1000)
    con.close()
    killed_tables = read_tables(root / "waddle.duckdb")
    whole_tables = read_tables(tmp_path / "reference.duckdb")
    for table in ("runs", "streams", "logged_values", "_waddle.offsets"):
        assert killed_tables[table] == whole_tables[table], f"{table}: seed {seed}"
    assert len(killed_tables["logged_values"]) == RUNS * EVENTS // 100
    assert {row[3] for row in killed_tables["runs"]} == {"finished"}
    assert os.path.exists(root / "state" / "duckdb.json")
    assert not list(root.glob(".*.tmp")) and not list((root / "state").glob(".*.tmp"))

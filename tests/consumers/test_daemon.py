"""``waddle-consume`` as a real process: catching up, tailing new streams and segment
roll-overs, corrupt lines, signals, a second instance, and a full disk waited out."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.consumers.logs import CONSUME, read_tables, segments, write_run
from tests.helpers import eventually
from tests.small_disk import same_as_one_clean_pass, small_disk
from waddle.consumers.registry import StateStore
from waddle.eventlog.segment import log_dir

HERE = Path(__file__).parent


STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_daemon_left() -> Iterator[None]:
    """A daemon a failing test left running is killed, not orphaned."""
    yield
    while STARTED:
        daemon = STARTED.pop()
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate(timeout=30)


def start(root: Path, *args: str) -> subprocess.Popen[str]:
    daemon = subprocess.Popen(
        [*CONSUME, "--dir", str(root), "--interval", "0.02", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    STARTED.append(daemon)
    return daemon


def once(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONSUME, "--dir", str(root), "--once", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def taken(root: Path, stream: str) -> int:
    offset = StateStore(root).load("duckdb").get(stream)
    return -1 if offset is None else offset.seq


def test_once_catches_up_and_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "one", 300, segment_bytes=4096)
    write_run(root, "two", 50)
    done = once(root)
    assert done.returncode == 0, done.stderr
    tables = read_tables(root / "waddle.duckdb")
    assert len(tables["metrics"]) == 3 * 350
    assert [row[0] for row in tables["runs"]] == ["one", "two"]
    assert taken(root, "one") == 302 and taken(root, "two") == 52
    again = once(root)
    assert again.returncode == 0
    assert read_tables(root / "waddle.duckdb") == tables


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_commits_and_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    root = tmp_path / "w"
    write_run(root, "run", 200)
    daemon = start(root)
    eventually(lambda: taken(root, "run") == 202)
    daemon.send_signal(sig)
    _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    assert sig.name in err
    assert len(read_tables(root / "waddle.duckdb")["metrics"]) == 600


# waddle-consume whose tails wait an hour when nothing is live, and say when they do.
QUIET_CONSUME = [
    sys.executable,
    "-c",
    """
import sys
from waddle.cli import parser
from waddle.eventlog import reader

reader.IDLE_WAIT_S = 3600.0
quiet = reader.LogReader._quiet

def noted(self, parking):
    if not quiet(self, parking):
        return False
    print("quiet", file=sys.stderr, flush=True)
    return True

reader.LogReader._quiet = noted
sys.exit(parser.consume_main())
""",
]


def test_a_signal_wakes_a_tail_waiting_with_nothing_live(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "done", 5)
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        daemon = subprocess.Popen([*QUIET_CONSUME, "--dir", str(root)], stderr=sink, text=True)
    STARTED.append(daemon)
    eventually(lambda: "quiet" in stderr.read_text(), timeout=30, what="a wait")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, stderr.read_text()
    assert taken(root, "done") == 7


def test_new_streams_and_rolled_segments_are_followed_while_running(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "early", 10)
    daemon = start(root)
    eventually(lambda: taken(root, "early") == 12)
    producer = subprocess.run(
        [sys.executable, str(HERE / "load.py"), str(root), "2", "3000", "8192", "200", "0.05"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert producer.returncode == 0, producer.stderr
    for stream in ("load0", "load1"):
        assert len(segments(root, stream)) > 5
        eventually(lambda stream=stream: taken(root, stream) == 3002)
    assert daemon.poll() is None
    daemon.send_signal(signal.SIGTERM)
    _, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    tables = read_tables(root / "waddle.duckdb")
    loss = [row for row in tables["metrics"] if row[1] == "loss"]
    assert len(loss) == 10 + 2 * 3000
    assert {row[0]: row[3] for row in tables["runs"]} == {
        "early": "finished",
        "load0": "finished",
        "load1": "finished",
    }


def test_corrupt_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "bad", 100)
    (path,) = segments(root, "bad")
    lines = path.read_bytes().splitlines(keepends=True)
    garbage = b'{"seq": 40, "ts": 1.0, "type": "metr\n'
    wrong = b'{"seq": 61, "ts": 1.0, "type": "metrics", "step": "x", "data": {}}\n'
    at_garbage = sum(len(line) for line in lines[:40])
    lines[40] = garbage
    lines[61] = wrong
    path.write_bytes(b"".join(lines))
    done = once(root)
    assert done.returncode == 0, done.stderr
    assert f"stream 'bad' segment {path.name} byte {at_garbage}" in done.stderr
    assert "step must be" in done.stderr or "needs 'step'" in done.stderr
    tables = read_tables(root / "waddle.duckdb")
    steps = sorted({row[2] for row in tables["metrics"]})
    assert steps == [s for s in range(100) if s not in (39, 60)]
    assert tables["runs"][0][3] == "finished"


def test_a_second_daemon_for_the_same_consumer_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "run", 20)
    daemon = start(root)
    try:
        eventually(lambda: taken(root, "run") == 22)
        second = once(root)
        assert second.returncode == 1
        assert "already running" in second.stderr
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    assert daemon.returncode == 0


def test_an_unknown_consumer_is_a_usage_error(tmp_path: Path) -> None:
    done = once(tmp_path / "w", "--consumer", "nope")
    assert done.returncode == 2
    assert "no consumer named 'nope'" in done.stderr
    assert not (log_dir(tmp_path / "w")).exists()


def test_a_full_disk_is_retried_not_fatal(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", tmp_path / "log") as disk:
        write_run(disk.root, "before", 50)
        stderr = tmp_path / "daemon.stderr"
        with open(stderr, "w") as err:
            daemon = subprocess.Popen(
                [*CONSUME, "--dir", str(disk.root), "--interval", "0.02"],
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
        STARTED.append(daemon)
        try:
            eventually(lambda: taken(disk.root, "before") == 52)
            disk.fill()
            write_run(disk.root, "during", 3000)
            eventually(lambda: "retries in" in stderr.read_text())
            failed = next(line for line in stderr.read_text().splitlines() if "retries" in line)
            assert "ERROR" in failed and "No space left" in failed and str(disk.root) in failed
            assert daemon.poll() is None, stderr.read_text()
            disk.free()
            eventually(lambda: taken(disk.root, "during") == 3002)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=30)
        assert daemon.returncode == 0, stderr.read_text()
        tables = same_as_one_clean_pass(disk.root, tmp_path / "reference.duckdb")
    assert len(tables["metrics"]) == 3 * (50 + 3000)

"""How ``waddle-consume`` ends: its work committed, then an exit that skips collecting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from tests.consumers.logs import write_run

# An exit handler registered before the command's own runs after it (last in, first out).
CHILD = """
import atexit, gc, sys
atexit.register(lambda: print("frozen", gc.get_freeze_count(), flush=True))
from waddle.cli.parser import consume_main
code = consume_main(sys.argv[1:])
print("objects", len(gc.get_objects()), flush=True)
sys.exit(code)
"""


def test_once_commits_everything_then_freezes_what_is_alive_for_the_exit(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 30)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "--dir", str(tmp_path), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    counts = dict(line.split() for line in done.stdout.splitlines())
    assert int(counts["frozen"]) >= int(counts["objects"]) // 2
    with duckdb.connect(str(tmp_path / "waddle.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (90,)

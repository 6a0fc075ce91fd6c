"""How ``waddle-consume --once`` starts and ends: only what it uses is imported, its work
is committed, then it exits without collecting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb

from tests.consumers.logs import write_run

# What a DuckDB catch-up never uses: the web stack, the models, change notification.
UNUSED = ("pydantic", "starlette", "uvicorn", "watchfiles", "websockets")
# An exit handler registered before the command's own runs after it (last in, first out).
CHILD = f"""
import atexit, gc, sys
atexit.register(lambda: print("frozen", gc.get_freeze_count(), flush=True))
from waddle.cli.parser import consume_main
code = consume_main(sys.argv[1:])
print("objects", len(gc.get_objects()))
print("loaded", ",".join(m for m in {UNUSED!r} if m in sys.modules) or "-", flush=True)
sys.exit(code)
"""


def once(root: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "--dir", str(root), "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(line.split() for line in done.stdout.splitlines())


def test_once_commits_everything_then_freezes_what_is_alive_for_the_exit(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 30)
    report = once(tmp_path)
    assert int(report["frozen"]) >= int(report["objects"]) // 2
    with duckdb.connect(str(tmp_path / "waddle.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (90,)


def test_once_imports_nothing_it_does_not_use(tmp_path: Path) -> None:
    write_run(tmp_path, "r", 3)
    assert once(tmp_path)["loaded"] == "-"

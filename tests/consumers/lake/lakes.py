"""Helpers of the lake tests: running the consumers as real processes, reading back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.consumers.logs import CONSUME

HERE = Path(__file__).parent
TIMEOUT_S = 120


def consume(root: Path, *args: str) -> None:
    """``waddle-consume --dir root --once ARGS`` as a real process; it must exit 0."""
    done = subprocess.run(
        [*CONSUME, "--dir", str(root), "--once", *args], capture_output=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr.decode()


def export(root: Path, lake: Path) -> None:
    consume(root, "--consumer", "lake", "--lake", str(lake))


def checksums(store: Path, lake: Path) -> dict[str, Any]:
    """Per-run checksums of the store and the lake, from a fresh DuckDB process."""
    done = subprocess.run(
        [sys.executable, str(HERE / "checksums.py"), str(store), str(lake)],
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr.decode()
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def files(lake: Path) -> list[str]:
    """Every file of the lake, relative to it."""
    return sorted(str(p.relative_to(lake)) for p in lake.rglob("*") if p.is_file())

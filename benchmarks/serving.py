"""Start a real ``waddle serve`` on an ephemeral loopback port for a benchmark."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path


def start_server(
    root: Path, *extra: str, timeout: float = 120.0
) -> tuple[subprocess.Popen[bytes], str]:
    """The server process and its base URL (``http://127.0.0.1:PORT``), once it listens."""
    command = [
        sys.executable,
        "-m",
        "waddle",
        "serve",
        "--dir",
        str(root),
        "--port",
        "0",
    ]
    proc = subprocess.Popen([*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([proc.stdout], [], [], 0.5)[0]:
            continue
        line = proc.stdout.readline().decode()
        if " at http://" in line:
            return proc, line.rsplit(" at ", 1)[1].strip().rstrip("/")
        if not line:
            break
    proc.kill()
    raise SystemExit("waddle serve did not start")

"""The run context: what ran, where, from which code. Every part is optional.

A part that cannot be read (no git, no /proc, a script from stdin) is left out; nothing
here raises into ``init``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

CODE_CAP_BYTES = 256 * 1024
DIFF_CAP_BYTES = 256 * 1024
_GIT_TIMEOUT_S = 3.0


def collect(gpus: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The context of this process, as the ``context`` field of the ``run`` event."""
    script = _main_script()
    context: dict[str, Any] = {
        "started_at": time.time(),
        "argv": list(sys.argv),
        "executable": sys.executable,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "os": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "cpu": {
            "model": _cpu_model(),
            "logical": psutil.cpu_count(logical=True),
            "physical": psutil.cpu_count(logical=False),
        },
        "memory_total": psutil.virtual_memory().total,
    }
    if gpus:
        context["gpus"] = gpus
    git = _git(script.parent if script else Path.cwd())
    if git:
        context["git"] = git
    if script:
        context["code"] = _snapshot(script)
    return context


def _main_script() -> Path | None:
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(path).resolve() if path and os.path.isfile(path) else None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _run_git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace") if done.returncode == 0 else None


def _git(cwd: Path) -> dict[str, Any] | None:
    """Commit, branch, dirty flag, a capped diff and the remote (credentials removed)."""
    heads = _run_git(cwd, "rev-parse", "HEAD", "--abbrev-ref", "HEAD")
    if heads is None:
        return None
    commit, _, branch = heads.strip().partition("\n")
    status = _run_git(cwd, "status", "--porcelain", "--untracked-files=no") or ""
    git: dict[str, Any] = {"commit": commit, "branch": branch, "dirty": bool(status.strip())}
    if git["dirty"]:
        diff = _run_git(cwd, "diff", "HEAD") or ""
        git["diff"] = diff[:DIFF_CAP_BYTES]
        git["diff_truncated"] = len(diff) > DIFF_CAP_BYTES
    remote = _run_git(cwd, "config", "--get", "remote.origin.url")
    if remote:
        git["remote"] = _without_credentials(remote.strip())
    return git


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _snapshot(script: Path) -> dict[str, Any]:
    """The main script's source, capped, with the hash of the whole file."""
    try:
        data = script.read_bytes()
    except OSError:
        return {"path": str(script)}
    return {
        "path": str(script),
        "sha256": hashlib.sha256(data).hexdigest(),
        "source": data[:CODE_CAP_BYTES].decode(errors="replace"),
        "truncated": len(data) > CODE_CAP_BYTES,
    }

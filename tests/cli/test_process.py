"""The installed ``waddle`` command as a process: --version, a closed pipe, ``waddle run``."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import waddle
from tests.consumers.logs import write_run
from tests.helpers import eventually
from waddle.compat.launch import SHIM_DIR
from waddle.consumers.registry import StateStore
from waddle.consumers.relay.consumer import relay_name

WADDLE = shutil.which("waddle") or pytest.fail("the waddle command is not installed")
TIMEOUT_S = 60


def waddle_cmd(*argv: str, **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [WADDLE, *argv], capture_output=True, text=True, timeout=TIMEOUT_S, check=False, **options
    )


def test_ls_and_show_right_after_the_quickstart(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_")}
    script = (
        "import waddle\n"
        "run = waddle.init(project='quick', name='first-try', config={'lr': 0.1})\n"
        "for step in range(3):\n"
        "    run.log({'loss': 1.0 / (step + 1)})\n"
        "run.finish()\n"
    )
    trained = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, timeout=TIMEOUT_S, check=False
    )
    assert trained.returncode == 0
    listed = waddle_cmd("ls", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[1:4] == ["quick", "first-try", "finished"]
    shown = waddle_cmd("show", "first-try", cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert f"run:       {row.split()[0]}\n" in shown.stdout and '"lr": 0.1' in shown.stdout


def test_relay_alone_runs_until_sigterm_then_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "waiting", 3)
    url = "http://127.0.0.1:9"  # nothing listens: the relay keeps the events and retries
    proc = subprocess.Popen(
        [WADDLE, "relay", url, "--dir", str(root), "--interval", "0.05"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        registry = StateStore(root)
        eventually(lambda: registry.is_running(relay_name(url)), what="the relay to start")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_version() -> None:
    result = waddle_cmd("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"waddle {waddle.__version__}"


def test_a_reader_that_closes_the_pipe_early_ends_it_quietly(tmp_path: Path) -> None:
    root = tmp_path / "w"
    config = {f"key{i}": "x" * 100 for i in range(2000)}  # far more than a pipe holds
    write_run(root, "big", 2, config=config)
    shell = f"{WADDLE} show big --dir {root} | head -n 1; echo ${{PIPESTATUS[0]}} >&2"
    result = subprocess.run(
        ["bash", "-c", shell], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    assert result.stdout == "run:       big\n"
    code = result.stderr.strip().splitlines()[-1]
    assert code in ("0", "141") and "Traceback" not in result.stderr, result.stderr


def test_run_puts_the_shim_in_front_of_wandb() -> None:
    result = waddle_cmd("run", "--", sys.executable, "-c", "import wandb; print(wandb.__file__)")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(SHIM_DIR)


def test_run_exits_with_the_commands_code() -> None:
    result = waddle_cmd("run", "--", sys.executable, "-c", "raise SystemExit(7)")
    assert result.returncode == 7
    assert waddle_cmd("run").returncode == 2


def test_run_passes_sigterm_on_to_the_command() -> None:
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('got it', flush=True), sys.exit(5)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [WADDLE, "run", "--", sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT_S)
        assert ready and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 5
        assert proc.stdout.read() == "got it\n"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

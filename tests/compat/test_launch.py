"""The launcher behind ``waddle run``: environment, exit codes and signals, with real
process trees (a launcher process and its command)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.compat.runs import LAUNCHER, SCRIPTS, finish_tree, kill_tree, start_tree
from tests.helpers import child_env, wait_for_line
from waddle.compat.launch import SHIM_DIR, launch, shim_environment
from waddle.errors import UsageError


def test_the_shim_goes_first_on_pythonpath_once() -> None:
    env = shim_environment({"PYTHONPATH": os.pathsep.join(["/mine", str(SHIM_DIR)]), "A": "1"})
    assert env == {"PYTHONPATH": os.pathsep.join([str(SHIM_DIR), "/mine"]), "A": "1"}
    assert shim_environment({})["PYTHONPATH"] == str(SHIM_DIR)


@pytest.mark.parametrize(
    ("code", "expected"),
    [("sys.exit(3)", 3), ("pass", 0), ("os.kill(os.getpid(), signal.SIGKILL)", 128 + 9)],
)
def test_the_command_exit_code_is_returned_as_a_shell_reports_it(code: str, expected: int) -> None:
    command = [sys.executable, "-c", f"import os, signal, sys; {code}"]
    assert launch(command) == expected


@pytest.mark.parametrize(
    ("command", "message"),
    [([], "no command to run"), (["/nonexistent/waddle-test"], "cannot run '/nonexistent")],
)
def test_a_command_that_cannot_run_is_a_usage_error(command: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        launch(command)


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 7), (signal.SIGINT, 8)])
def test_a_signal_to_the_launcher_reaches_the_command(signum: int, exit_code: int) -> None:
    command = [sys.executable, str(LAUNCHER), sys.executable, str(SCRIPTS / "signal_child.py")]
    launcher = start_tree(command, env=child_env())
    try:
        wait_for_line(launcher, "ready")
    except BaseException:
        kill_tree(launcher)  # the launcher is not reaped yet, so its group id is still ours
        raise
    launcher.send_signal(signum)
    code, out, err = finish_tree(launcher, timeout=30)
    assert (code, out.split()) == (exit_code, ["got", str(int(signum))]), err


def test_a_ctrl_c_that_the_terminal_already_delivered_is_not_sent_twice() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "terminal_groups.py")],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # In the terminal's foreground group: already delivered. In a session of its own: not.
    assert (done.returncode, done.stdout.split()) == (0, ["True", "False"]), done.stderr

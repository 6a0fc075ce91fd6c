"""Run a command in which ``import wandb`` is Waddle: the library behind ``waddle run``.

The command gets the shim folder (the ``wandb`` package of ``waddle.compat.shim`` and its
``wandb-<version>.dist-info``) first on ``PYTHONPATH``. Every Python process of the
command's tree inherits that, so ``import wandb`` and ``importlib.metadata`` find Waddle
before any real wandb; nothing outside the tree changes (the caller's environment,
``sys.path`` and ``sys.modules`` are left as they were). A Python started with ``-E`` or
``-I`` ignores ``PYTHONPATH`` and so sees no shim; the command's Python must have Waddle
installed.

Signals: SIGTERM and SIGINT sent to the launcher are passed on to the command, which
decides how to end; the launcher returns when the command has exited. One exception: a
Ctrl-C typed at the terminal reaches every process of the terminal's foreground group,
so when the command is in that group it has already received the SIGINT and the
launcher does not send it a second one (a second SIGINT would interrupt the command's
own clean-up). A signal the launcher was started ignoring stays ignored, for both.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from waddle.errors import UsageError

SHIM_DIR = Path(__file__).resolve().parent / "shim"
FORWARDED = (signal.SIGINT, signal.SIGTERM)
SIGNAL_EXIT_BASE = 128


def shim_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the shim first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(SHIM_DIR)]
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM_DIR), *rest])
    return env


def launch(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` with the shim and return its exit code.

    A command killed by a signal returns 128 + the signal's number, as a shell reports
    it. A command that cannot be started raises ``UsageError`` naming it.
    """
    if not command:
        raise UsageError("no command to run: waddle run -- python train.py ...")
    forwarder = _Forwarder()
    previous = {
        signum: signal.signal(signum, forwarder)
        for signum in FORWARDED
        if signal.getsignal(signum) != signal.SIG_IGN
    }
    try:
        try:
            child = subprocess.Popen(list(command), env=shim_environment(env))
        except OSError as exc:
            raise UsageError(f"cannot run {command[0]!r}: {exc.strerror or exc}") from exc
        forwarder.attach(child)
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return SIGNAL_EXIT_BASE - code if code < 0 else code


class _Forwarder:
    """The launcher's handler for ``FORWARDED``: passes each signal on to the child.

    A signal that comes before the child exists is kept and sent once it does.
    """

    def __init__(self) -> None:
        self._child: subprocess.Popen[Any] | None = None
        self._early: list[int] = []

    def attach(self, child: subprocess.Popen[Any]) -> None:
        self._child = child
        while self._early:
            self._send(self._early.pop(0))

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self._child is None:
            self._early.append(signum)
        else:
            self._send(signum)

    def _send(self, signum: int) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        if signum == signal.SIGINT and _terminal_sent_it(child.pid):
            return
        child.send_signal(signum)


def _terminal_sent_it(pid: int) -> bool:
    """Whether ``pid`` is in the foreground group of our controlling terminal, where a
    Ctrl-C has already reached it."""
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # no controlling terminal: a scheduler or a pipeline sent the signal
        return False
    try:
        return os.tcgetpgrp(tty) == os.getpgid(pid)
    except OSError:
        return False
    finally:
        os.close(tty)

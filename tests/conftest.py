"""Fixtures every test gets: an isolated Waddle folder and no live runs left behind.

``isolated_waddle`` is autouse for the whole suite so that no test, in any package,
can write runs into the developer's ``./.waddle`` or inherit ``WADDLE_*``, ``WANDB_*``
or ``RANK`` from the shell. Servers that tests start build their child's environment
without ``WADDLE_*`` (``tests/web/conftest.py``, ``tests/dashboard/conftest.py``), and
producers that must write elsewhere name their folder with ``init(root=...)``, which
``$WADDLE_DIR`` does not override.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import waddle.producer.api
from waddle.producer.config import Config

# What changes where and how waddle.init writes (wandb's own names are read as fallbacks).
ENV_PREFIXES = ("WADDLE_", "WANDB_")
ENV_NAMES = ("RANK",)


@pytest.fixture(autouse=True)
def isolated_waddle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh Waddle folder in ``$WADDLE_DIR``, cwd in ``tmp_path``, no live runs and
    no ``waddle.config`` set before an ``init``.

    The process-wide hooks (atexit, excepthook, SIGTERM) are marked installed so that
    in-process runs leave pytest's own handlers alone; the hooks are tested in real
    subprocesses. Runs a test leaves open are finished, so no lock or thread outlives it.
    """
    for name in list(os.environ):
        if name in ENV_NAMES or name.startswith(ENV_PREFIXES):
            monkeypatch.delenv(name)
    root = tmp_path / "waddle-root"
    monkeypatch.setenv("WADDLE_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(waddle.producer.api, "_live", [])
    monkeypatch.setattr(waddle.producer.api, "_preinit_config", Config())
    monkeypatch.setattr(waddle.producer.api, "_hooks_installed", True)
    yield root
    problems = []
    for run in list(waddle.producer.api._live):
        try:
            run.finish()
        except Exception as exc:  # report every run, not just the first
            problems.append(f"{run!r}: {exc!r}")
    assert not problems, f"runs the test left open failed to finish: {problems}"

"""Fixtures every test gets: an isolated Waddle folder and no live runs left behind.

``isolated_waddle`` is autouse for the whole suite so that no test, in any package,
can write runs into the developer's ``./.waddle`` or inherit ``WADDLE_*``/``RANK`` from
the shell. Servers that tests start build their child's environment without ``WADDLE_*``
(``tests/web/conftest.py``, ``tests/dashboard/conftest.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import waddle.producer.api

# Environment variables that change what waddle.init does; no test inherits them.
WADDLE_ENV = ("RANK", "WADDLE_RUN_ID", "WADDLE_DIR", "WADDLE_MODE", "WADDLE_PROJECT", "WADDLE_NAME")
# Packages whose tests name every folder themselves and start producers in child
# processes with ``init(dir=...)``: an inherited ``$WADDLE_DIR`` would move those runs.
NO_WADDLE_DIR = ("eventlog", "consumers")
TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def isolated_waddle(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A fresh Waddle folder in ``$WADDLE_DIR``, cwd in ``tmp_path``, no live runs.

    Under ``NO_WADDLE_DIR`` the folder is returned but ``$WADDLE_DIR`` stays unset.

    The process-wide hooks (atexit, excepthook, SIGTERM) are marked installed so that
    in-process runs leave pytest's own handlers alone; the hooks are tested in real
    subprocesses. Runs a test leaves open are finished, so no lock or thread outlives it.
    """
    for name in WADDLE_ENV:
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "waddle-root"
    if request.path.relative_to(TESTS).parts[0] not in NO_WADDLE_DIR:
        monkeypatch.setenv("WADDLE_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(waddle.producer.api, "_live", [])
    monkeypatch.setattr(waddle.producer.api, "_hooks_installed", True)
    yield root
    problems = []
    for run in list(waddle.producer.api._live):
        try:
            run.finish()
        except Exception as exc:  # report every run, not just the first
            problems.append(f"{run!r}: {exc!r}")
    assert not problems, f"runs the test left open failed to finish: {problems}"

"""The ``wandb`` package that ``waddle run`` provides, seen from inside the process tree."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from tests.compat.runs import run_launched
from tests.helpers import of_type, read_events
from waddle.compat.launch import SHIM_DIR, launch
from waddle.ids import is_valid_id


def fake_real_wandb(folder: Path) -> Path:
    """A stand-in for an installed real wandb (package and distribution metadata)."""
    (folder / "wandb").mkdir(parents=True)
    (folder / "wandb" / "__init__.py").write_text("raise ImportError('the real wandb')\n")
    info = folder / "wandb-0.31.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wandb\nVersion: 0.31.0\n")
    return folder


@pytest.mark.parametrize("real_wandb_installed", [False, True])
def test_import_wandb_is_waddle_with_what_integrations_check(
    tmp_path: Path, real_wandb_installed: bool
) -> None:
    env = dict(os.environ)
    if real_wandb_installed:
        env["PYTHONPATH"] = str(fake_real_wandb(tmp_path / "site"))
    report_path = tmp_path / "report.json"
    done = run_launched("probe_shim.py", str(report_path), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(report_path.read_text())

    assert Path(report["origin"]) == SHIM_DIR / "wandb" / "__init__.py"
    assert report["distribution_version"] == report["module_version"]
    assert report["distribution_version"] in SpecifierSet(">=0.12.10")  # Lightning's check
    assert report["missing"] == []
    assert report["run_before_init"] and report["run_after_finish"]
    assert report["run_is_current"] and report["run_is_a_Run"]
    assert report["RunDisabled_is_a_Run"] and report["ConfigError_caught"]
    assert report["config_follows_run"] == 1
    assert is_valid_id(report["generated_id"])

    events = read_events()
    assert events[0]["project"] == "shim" and events[0]["config"] == {"a": 1}
    assert [e["data"] for e in of_type(events, "metrics")] == [{"x": 1.5}]
    assert events[-2]["summary"]["best"] == 2.5
    assert (events[-1]["type"], events[-1]["status"]) == ("finish", "finished")


def test_nothing_outside_the_launched_tree_changes() -> None:
    before = (os.environ.get("PYTHONPATH"), list(sys.path), signal.getsignal(signal.SIGINT))
    sigterm = signal.getsignal(signal.SIGTERM)
    check = "import sys, wandb; sys.exit(0 if wandb.__file__.startswith(sys.argv[1]) else 5)"
    assert launch([sys.executable, "-c", check, str(SHIM_DIR)]) == 0
    assert (os.environ.get("PYTHONPATH"), list(sys.path), signal.getsignal(signal.SIGINT)) == (
        before
    )
    assert signal.getsignal(signal.SIGTERM) == sigterm
    assert "wandb" not in sys.modules

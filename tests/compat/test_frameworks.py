"""``waddle run`` with real frameworks and no code change: Hugging Face's
``report_to=["wandb"]`` and Lightning's ``WandbLogger`` write complete Waddle runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compat.runs import assert_hf_run, assert_lightning_run, framework_env, run_launched
from tests.helpers import read_events, waddle_dir


@pytest.mark.slow
def test_hf_trainer_reporting_to_wandb_logs_a_complete_run(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    done = run_launched(
        "hf_report_to_wandb.py", str(tmp_path / "out"), cwd=tmp_path, env=framework_env()
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert_hf_run(read_events(waddle_dir()), native=False)


@pytest.mark.slow
def test_lightning_wandb_logger_logs_a_complete_run_under_the_waddle_folder(
    tmp_path: Path,
) -> None:
    pytest.importorskip("lightning")
    env = framework_env()
    del env["WADDLE_DIR"]  # WandbLogger(save_dir=".") passes dir=".": the run goes to ./.waddle
    done = run_launched("lightning_wandb_logger.py", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert_lightning_run(read_events(tmp_path / ".waddle"), native=False)

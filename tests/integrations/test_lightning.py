"""``WaddleLogger`` with a real Lightning ``Trainer`` (a tiny regression, CPU)."""

from __future__ import annotations

import logging
from argparse import Namespace
from pathlib import Path

import pytest

from tests.compat.runs import assert_lightning_run, folded_config
from tests.compat.scripts import tiny
from tests.helpers import of_type, read_events

pytest.importorskip("lightning")
from waddle.integrations.lightning import WaddleLogger

# Lightning 2.6 still uses torch's LeafSpec, which torch 2.13 deprecates: theirs, not ours.
pytestmark = pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")


def test_logger_records_hyperparameters_metrics_on_the_global_step_and_finish(
    tmp_path: Path,
) -> None:
    logger = WaddleLogger(project="tiny-lightning")
    tiny.lightning_fit(logger, tmp_path)
    events = read_events()
    assert events[0]["project"] == "tiny-lightning"
    assert logger.version == events[0]["run_id"]
    assert_lightning_run(events, native=True)


def test_hyperparameters_that_json_cannot_hold_are_kept_as_text() -> None:
    logger = WaddleLogger()
    logger.log_hyperparams(Namespace(layers={0: "embed", 1: "head"}, loss=len, lr=0.1))
    logger.finalize("success")
    config = folded_config(read_events())
    assert config["layers"] == {"0": "embed", "1": "head"}
    assert config["loss"] == str(len) and config["lr"] == 0.1


def test_a_failed_fit_finishes_the_run_as_failed() -> None:
    logger = WaddleLogger()
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.finalize("failed")
    finish = of_type(read_events(), "finish")
    assert [(e["status"], e["exit_code"]) for e in finish] == [("failed", 1)]


def test_media_are_not_recorded_yet_and_say_so_once(caplog: pytest.LogCaptureFixture) -> None:
    logger = WaddleLogger()
    with caplog.at_level(logging.WARNING, logger="waddle"):
        for _ in range(2):
            logger.log_image("samples", images=[[0.0]])
            logger.log_table("samples", columns=["a"], data=[[1]])
    assert [record.args for record in caplog.records] == [("log_image",), ("log_table",)]

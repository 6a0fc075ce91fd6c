"""``WaddleLogger``: a Lightning run recorded in Waddle.

``Trainer(logger=WaddleLogger(project="..."))`` records the hyperparameters
(``save_hyperparameters()`` and ``log_hyperparams``) as the run's config, and each
``log_metrics`` at Waddle step = Lightning's global step, with ``trainer/global_step`` in
the data too, so the curves line up with a run recorded through ``WandbLogger``. The run
finishes when Lightning finalizes the logger (``failed`` when training failed) and
continues under the same id if the trainer logs again (``test()`` after ``fit()``).
Only global rank 0 records.

Media are not recorded yet: ``log_image``, ``log_table`` and ``log_text`` say so once
and return, so that a training job written for ``WandbLogger`` keeps running.
"""

from __future__ import annotations

import logging
import os
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from waddle.integrations.session import IntegrationRun, json_safe

logger = logging.getLogger("waddle")

STEP_METRIC = "trainer/global_step"
DEFAULT_PROJECT = "lightning_logs"


class WaddleLogger(Logger):
    """A Lightning ``Logger`` that writes a Waddle run.

    ``project`` defaults to ``$WADDLE_PROJECT``, else ``lightning_logs`` (as
    ``WandbLogger``); Lightning also names checkpoint folders after it. ``save_dir`` is
    ``waddle.init``'s ``dir``; other keyword arguments go to ``waddle.init`` too.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        save_dir: str | os.PathLike[str] | None = None,
        id: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        self._project = project or os.environ.get("WADDLE_PROJECT") or DEFAULT_PROJECT
        self._save_dir = None if save_dir is None else os.fspath(save_dir)
        self._session = IntegrationRun(
            step_metric=STEP_METRIC,
            project=self._project,
            name=name,
            dir=self._save_dir,
            id=id,
            **init_kwargs,
        )
        self._said: set[str] = set()

    @property
    def name(self) -> str:
        return self._project

    @property
    def version(self) -> str | None:
        """The run's id: the one given, else the started run's, else None (as WandbLogger)."""
        return self._session.id

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The ``waddle.Run`` (started on first use), for ``self.logger.experiment.log(...)``."""
        return self._session.get()

    @rank_zero_only
    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace | None, *args: Any, **kwargs: Any
    ) -> None:
        if isinstance(params, Namespace):
            params = vars(params)
        if params:
            self.experiment.config.update(json_safe(params))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is None:
            self.experiment.log(dict(metrics))
        else:
            self.experiment.log({**metrics, STEP_METRIC: step}, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the run: ``failed`` (exit code 1) when Lightning says so, else ``finished``."""
        self._session.finish(1 if status == "failed" else None)

    def log_image(
        self, key: str, images: list[Any], step: int | None = None, **kwargs: Any
    ) -> None:
        """Not recorded yet (media support comes next); says so once."""
        self._not_yet("log_image")

    def log_table(self, key: str, *args: Any, **kwargs: Any) -> None:
        """Not recorded yet (tables come with media support); says so once."""
        self._not_yet("log_table")

    def log_text(self, key: str, *args: Any, **kwargs: Any) -> None:
        """Not recorded yet (text tables come with media support); says so once."""
        self._not_yet("log_text")

    def _not_yet(self, method: str) -> None:
        if method not in self._said:
            self._said.add(method)
            logger.warning(
                "waddle: WaddleLogger.%s records nothing yet (media support is not there "
                "yet); training goes on",
                method,
            )

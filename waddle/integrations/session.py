"""The run a framework integration logs into, and the values it may hand to a config.

An integration logs into the script's own run when the script started one (and leaves
finishing it to the script), else into a run it starts itself. It finishes a run it
started when training ends, and if the framework logs again afterwards (``evaluate()``
or ``test()`` after ``fit``), it continues that same run (same id, ``resume="allow"``)
instead of starting a second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import waddle


class IntegrationRun:
    """Starts, reuses, finishes and continues the run of one callback or logger.

    ``step_metric`` (the framework's global step) is declared on the run with
    ``define_metric`` as every metric's x axis, as wandb's own integrations do.
    """

    def __init__(self, *, step_metric: str, id: str | None = None, **init_kwargs: Any) -> None:
        self._step_metric = step_metric
        self._init_kwargs = init_kwargs
        self._id = id
        self._run: waddle.Run | None = None
        self._owned = False

    @property
    def id(self) -> str | None:
        """The run's id once known (given, or chosen when the run started)."""
        return self._id

    @property
    def started(self) -> bool:
        return self._run is not None

    def get(self) -> waddle.Run:
        """The run to log into, started (or continued) on first use."""
        if self._run is None:
            current = waddle.run
            if current is not None:
                self._run, self._owned = current, False
            else:
                resume = "allow" if self._id is not None else None
                self._run = waddle.init(id=self._id, resume=resume, **self._init_kwargs)
                self._owned = True
            self._id = self._run.id
            self._run.define_metric(self._step_metric)
            self._run.define_metric("*", step_metric=self._step_metric)
        return self._run

    def finish(self, exit_code: int | None = None) -> None:
        """Finish the run if this integration started it; the next ``get`` continues it."""
        if self._run is not None and self._owned:
            self._run.finish(exit_code)
        self._run = None


def json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as JSON has it: keys become strings, what JSON cannot hold becomes its
    ``str``. Frameworks hand over configs with int keys (``id2label``) and objects
    (modules, callables); a config must never stop a training job."""
    cleaned: dict[str, Any] = json.loads(json.dumps(dict(values), default=str))
    return cleaned

"""``WaddleCallback``: a Hugging Face ``Trainer`` run recorded in Waddle.

``Trainer(..., callbacks=[WaddleCallback()])`` (with ``report_to=[]`` or ``"none"`` so
that no other tracker runs) records:

* config: the model's config, then the ``TrainingArguments`` (which win on a shared
  key, as in wandb's callback), and ``model/num_parameters``;
* metrics: each ``Trainer.log`` with the key names of wandb's callback (``train/loss``,
  ``train/learning_rate``, ``eval/loss``, ``test/...``), logged at Waddle step =
  ``state.global_step``, with ``train/global_step`` in the data too, so the curves line
  up with a run recorded through ``report_to=["wandb"]``;
* summary: the end-of-training figures (``train_runtime``, ``train_loss``, ...), which
  are one number per run, not a curve;
* finish, when training ends (see ``waddle.integrations.session`` for runs the script
  started itself, and for logging after training).

Only the main process (``state.is_world_process_zero``) records.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.integrations.integration_utils import rewrite_logs

from waddle.integrations.session import IntegrationRun, json_safe

STEP_METRIC = "train/global_step"
SUMMARY_ONLY = (
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "train_loss",
    "total_flos",
)


class WaddleCallback(TrainerCallback):
    """Records a ``Trainer``'s config, metrics, summary and end in a Waddle run.

    Keyword arguments go to ``waddle.init`` (``project``, ``name``, ``tags``, ``dir``,
    ``id``, ...); ``name`` defaults to ``TrainingArguments.run_name``.
    """

    def __init__(self, **init_kwargs: Any) -> None:
        self._init_kwargs = init_kwargs
        self._session: IntegrationRun | None = None
        self._configured = False

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero:
            self._run(args, model)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        run = self._run(args, model)
        summary = {key: value for key, value in logs.items() if key in SUMMARY_ONLY}
        if summary:
            run.summary.update(summary)
        self._log(run, state, {k: v for k, v in logs.items() if k not in SUMMARY_ONLY})

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and metrics:
            self._log(self._run(args, model), state, metrics)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self._session is not None:
            self._session.finish()

    def _run(self, args: TrainingArguments, model: Any) -> Any:
        """The run, started on first use; its config is recorded once."""
        if self._session is None:
            self._session = IntegrationRun(
                step_metric=STEP_METRIC, **{"name": args.run_name, **self._init_kwargs}
            )
        run = self._session.get()
        if not self._configured:
            self._configured = True
            run.config.update(_config(args, model))
        return run

    @staticmethod
    def _log(run: Any, state: TrainerState, values: dict[str, Any]) -> None:
        step = state.global_step
        run.log({**rewrite_logs(values), STEP_METRIC: step}, step=step)


def _config(args: TrainingArguments, model: Any) -> dict[str, Any]:
    """The model's config, the training arguments over it, and the model's size."""
    config: dict[str, Any] = {}
    model_config = getattr(model, "config", None)
    if model_config is not None:
        config.update(model_config if isinstance(model_config, dict) else model_config.to_dict())
    config.update(args.to_dict())
    if model is not None:
        config["model/num_parameters"] = _num_parameters(model)
    return json_safe(config)


def _num_parameters(model: Any) -> int:
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return sum(parameter.numel() for parameter in model.parameters())

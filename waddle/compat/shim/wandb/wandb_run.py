"""``wandb.wandb_run``: ``Run``, so that ``isinstance(run, Run)`` holds for Waddle's runs."""

from waddle import Run

__all__ = ["Run"]

"""``wandb.sdk``: the submodules that integrations import by path."""

from . import lib

__all__ = ["lib"]

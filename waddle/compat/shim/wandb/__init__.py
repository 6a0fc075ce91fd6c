"""``wandb`` inside ``waddle run``: Waddle under wandb's name.

``waddle run`` puts the folder above this package first on ``PYTHONPATH``, so that
``import wandb`` anywhere in the command's process tree (the user's script, Hugging
Face's ``WandbCallback``, Lightning's ``WandbLogger``) gets this package, whether or not
the real wandb is installed. Beside it, ``wandb-<version>.dist-info`` answers
``importlib.metadata.version("wandb")`` with ``__version__`` below, a real wandb
release above the floors that integrations check (Lightning: ``wandb>=0.12.10``).

Every name comes from ``waddle``, which exports the whole surface (local equivalents
and harmless no-ops included: ``waddle.compat``); ``wandb.run``, ``wandb.config`` and
``wandb.summary`` follow the current run at each access, as in wandb.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import waddle

from . import sdk, util, wandb_run

__version__ = "0.19.0"
__all__ = ["sdk", "util", "wandb_run"]

_MISSING = object()


def __getattr__(name: str) -> Any:
    """A public name of ``waddle`` (never one of its submodules)."""
    if not name.startswith("_"):
        value = getattr(waddle, name, _MISSING)
        if value is not _MISSING and not isinstance(value, ModuleType):
            return value
    raise AttributeError(f"module 'wandb' (Waddle) has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__", *waddle.__all__, "run", "config", "summary"})

"""Waddle: an offline-first experiment tracker with wandb's API shape.

``import waddle as wandb`` works for init/config/log/summary/finish. Importing this
package loads only what a training process needs (orjson, psutil); the database, the
web server and pydantic are imported by the modules that use them.
"""

from __future__ import annotations

from typing import Any

from waddle.errors import EncodeError, StreamLockedError, UsageError, WaddleError
from waddle.producer.api import finish, init, log
from waddle.producer.config import Config, Summary
from waddle.producer.run import Run

__version__ = "0.1.0"
__all__ = [
    "Config",
    "EncodeError",
    "Run",
    "StreamLockedError",
    "Summary",
    "UsageError",
    "WaddleError",
    "config",
    "finish",
    "init",
    "log",
    "run",
    "summary",
]


def __getattr__(name: str) -> Any:
    """``waddle.run``, ``waddle.config`` and ``waddle.summary`` follow the current run."""
    if name in ("run", "config", "summary"):
        from waddle.producer.api import current

        run = current()
        if name == "run" or run is None:
            return run
        return getattr(run, name)
    raise AttributeError(f"module 'waddle' has no attribute {name!r}")

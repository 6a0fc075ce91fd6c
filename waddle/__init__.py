"""Waddle: an offline-first experiment tracker with wandb's API shape.

``import waddle as wandb`` covers the wandb surface that scripts and integrations use
(docs/wandb.md lists each name and what Waddle does with it). Importing this package
loads only what a training process needs (orjson, psutil); the database, the web server
and pydantic are imported by the modules that use them.
"""

from __future__ import annotations

from typing import Any

from waddle.compat import util
from waddle.compat.public_api import Api
from waddle.compat.surface import (
    AlertLevel,
    Settings,
    alert,
    log_artifact,
    login,
    mark_preempting,
    require,
    save,
    setup,
    termerror,
    termlog,
    termwarn,
    unwatch,
    use_artifact,
    watch,
)
from waddle.errors import EncodeError, StreamLockedError, UsageError, WaddleError
from waddle.producer.api import define_metric, finish, init, log
from waddle.producer.artifacts import Artifact
from waddle.producer.config import Config, Summary
from waddle.producer.media import Audio, Histogram, Image, Table, Video
from waddle.producer.media.stand_ins import Html, Object3D, plot
from waddle.producer.run import DisabledRun as RunDisabled
from waddle.producer.run import Run

__version__ = "0.1.0"
# ``run``, ``config`` and ``summary`` are not listed: ``from waddle import *`` would bind
# their values at that moment (None), not the current run's.
__all__ = [
    "AlertLevel",
    "Api",
    "Artifact",
    "Audio",
    "Config",
    "EncodeError",
    "Histogram",
    "Html",
    "Image",
    "Object3D",
    "Run",
    "RunDisabled",
    "Settings",
    "StreamLockedError",
    "Summary",
    "Table",
    "UsageError",
    "Video",
    "WaddleError",
    "alert",
    "define_metric",
    "finish",
    "init",
    "log",
    "log_artifact",
    "login",
    "mark_preempting",
    "plot",
    "require",
    "save",
    "setup",
    "termerror",
    "termlog",
    "termwarn",
    "unwatch",
    "use_artifact",
    "util",
    "watch",
]


def __getattr__(name: str) -> Any:
    """``waddle.run``, ``waddle.config`` and ``waddle.summary`` follow the current run.

    Before ``init``: ``run`` and ``summary`` are None; ``config`` is a ``Config`` whose
    values the next ``init`` applies (under its own ``config=``).
    """
    if name in ("run", "config", "summary"):
        from waddle.producer.api import current, preinit_config

        run = current()
        if name == "run":
            return run
        if run is None:
            return preinit_config() if name == "config" else None
        return getattr(run, name)
    raise AttributeError(f"module 'waddle' has no attribute {name!r}")

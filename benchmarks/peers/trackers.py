"""One adapter per tracker: the init / log / finish that a training script would write.

Every tracker runs in its default, documented offline configuration, with all of its
files inside the round's folder. A non-default mode worth knowing is a row of its own
(``mlflow-file``, ``mlflow-async``), never a silent replacement of the default row.

An adapter's ``start`` returns the tracker's own log callable wherever one exists, so
the timing loop calls the tracker directly, with no wrapper frame of ours in between;
only TensorBoardX (one ``add_scalar`` per key) and the floors need a small closure.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

LogFn = Callable[..., object]
"""Called as ``log(data, step=i)``."""

OFFLINE_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "AIM_UI_TELEMETRY_ENABLED": "0",
    # numpy's BLAS on one thread: the training loop stands for one busy Python thread,
    # and a tracker's background threads or service process may use the other core.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
"""Environment of every worker: no network, no telemetry, no thread oversubscription."""


class Tracker:
    """A tracker's run lifecycle, as a training script drives it."""

    name: ClassVar[str]
    module: ClassVar[str | None]  # imported (and timed) first; must be installed
    dist: ClassVar[str | None]  # the distribution whose version the report names
    note: ClassVar[str] = "defaults"

    def env(self, workdir: Path) -> dict[str, str]:
        """Variables that point the tracker's files into ``workdir``."""
        return {}

    def start(self, workdir: Path) -> LogFn:
        """Begin a run (the worker's cwd is ``workdir``) and return its log call."""
        raise NotImplementedError

    def finish(self) -> None:
        """End the run the way the tracker's docs say a script should."""
        raise NotImplementedError


class NoTracker(Tracker):
    """The training loop's baseline: a call that does nothing, in place of log()."""

    name, module, dist, note = "none", None, None, "baseline loop"

    def start(self, workdir: Path) -> LogFn:
        return lambda data, step: None

    def finish(self) -> None:
        pass


class Waddle(Tracker):
    name, module, dist, note = "waddle", "waddle", "waddleml", "system_metrics=False"

    def start(self, workdir: Path) -> LogFn:
        import waddle

        self.run = waddle.init(project="bench", root=str(workdir), system_metrics=False)
        return self.run.log

    def finish(self) -> None:
        self.run.finish()


class Floor(Tracker):
    """The least work that leaves Waddle's durable log: envelope, encode, one write."""

    dist = None  # the standard library

    def encoder(self) -> Callable[[dict], bytes]:
        """The encoding of one event into one line, resolved once, outside the loop."""
        raise NotImplementedError

    def start(self, workdir: Path) -> LogFn:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self.fd = fd = os.open(workdir / "floor.ndjson", flags, 0o644)
        seq, now, encode, write = itertools.count(), time.time, self.encoder(), os.write

        def log(data: dict, step: int) -> None:
            event = {"seq": next(seq), "ts": now(), "type": "metrics", "step": step, "data": data}
            write(fd, encode(event))

        return log

    def finish(self) -> None:
        os.fsync(self.fd)
        os.close(self.fd)


class OrjsonFloor(Floor):
    name, module, dist = "orjson-floor", "orjson", "orjson"
    note = "orjson + os.write, fsync at finish"

    def encoder(self) -> Callable[[dict], bytes]:
        import orjson

        return functools.partial(orjson.dumps, option=orjson.OPT_APPEND_NEWLINE)


class JsonFloor(Floor):
    name, module, note = "json-floor", "json", "stdlib json + os.write, fsync at finish"

    def encoder(self) -> Callable[[dict], bytes]:
        import json

        dumps = json.dumps
        return lambda event: (dumps(event) + "\n").encode()


class Wandb(Tracker):
    name, module, dist, note = "wandb", "wandb", "wandb", "WANDB_MODE=offline"

    def env(self, workdir: Path) -> dict[str, str]:
        return {
            "WANDB_DIR": str(workdir),
            "WANDB_CACHE_DIR": str(workdir / "cache"),
            "WANDB_CONFIG_DIR": str(workdir / "config"),
            "WANDB_DATA_DIR": str(workdir / "data"),
        }

    def start(self, workdir: Path) -> LogFn:
        import wandb

        self.run = wandb.init(project="bench", dir=str(workdir))
        return self.run.log

    def finish(self) -> None:
        self.run.finish()


class Trackio(Tracker):
    name, module, dist, note = "trackio", "trackio", "trackio", "local SQLite (TRACKIO_DIR)"

    def env(self, workdir: Path) -> dict[str, str]:
        return {"TRACKIO_DIR": str(workdir)}

    def start(self, workdir: Path) -> LogFn:
        import trackio

        trackio.init(project="bench")
        return trackio.log

    def finish(self) -> None:
        import trackio

        trackio.finish()


class Mlflow(Tracker):
    """MLflow's default local store: ``sqlite:///mlflow.db`` in the working directory."""

    name, module, dist, note = "mlflow", "mlflow", "mlflow", "default store (sqlite in cwd)"

    def start(self, workdir: Path) -> LogFn:
        import mlflow

        mlflow.set_experiment("bench")
        mlflow.start_run()
        return mlflow.log_metrics

    def finish(self) -> None:
        import mlflow

        mlflow.end_run()


class MlflowFile(Mlflow):
    """The ``./mlruns`` file store, now opt-in (MLFLOW_ALLOW_FILE_STORE) but widely used."""

    name, note = "mlflow-file", "file store ./mlruns"

    def env(self, workdir: Path) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": (workdir / "mlruns").as_uri(),
            "MLFLOW_ALLOW_FILE_STORE": "true",
        }


class MlflowAsync(Mlflow):
    """Non-default: the default store with ``synchronous=False``; finish waits for it."""

    name, note = "mlflow-async", "default store, log_metrics(synchronous=False)"

    def start(self, workdir: Path) -> LogFn:
        return functools.partial(super().start(workdir), synchronous=False)


class TensorBoardX(Tracker):
    name, module, dist, note = "tensorboardx", "tensorboardX", "tensorboardX", "add_scalar per key"

    def start(self, workdir: Path) -> LogFn:
        from tensorboardX import SummaryWriter

        self.writer = writer = SummaryWriter(logdir=str(workdir))
        add_scalar = writer.add_scalar

        def log(data: dict, step: int) -> None:
            for key, value in data.items():
                add_scalar(key, value, step)

        return log

    def finish(self) -> None:
        self.writer.close()


class Aim(Tracker):
    name, module, dist, note = "aim", "aim", "aim", "local repo, Run.track(dict)"

    def start(self, workdir: Path) -> LogFn:
        from aim import Run

        self.run = Run(repo=str(workdir), experiment="bench")
        return self.run.track

    def finish(self) -> None:
        self.run.close()


TRACKERS: dict[str, type[Tracker]] = {
    cls.name: cls
    for cls in (
        Waddle,
        OrjsonFloor,
        JsonFloor,
        Wandb,
        Trackio,
        Mlflow,
        MlflowFile,
        MlflowAsync,
        TensorBoardX,
        Aim,
    )
}
"""Every row of the log workload, in the order of each round."""


def tracker(name: str) -> Tracker:
    """A fresh adapter for a row name, the training loop's ``none`` baseline included."""
    return (TRACKERS | {NoTracker.name: NoTracker})[name]()

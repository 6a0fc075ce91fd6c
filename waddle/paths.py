"""Every default path of a Waddle folder, written once.

The layout (design.md section 2)::

    <root>/log/<stream>/       the event log
    <root>/state/              consumers' committed offsets
    <root>/blobs/              content-addressed files
    <root>/artifacts/          each artifact name's versions and aliases (<name>.json)
    <root>/waddle.duckdb       the DuckDB writer's database
    <root>/waddle.runs.parquet the runs snapshot the writer publishes next to it

Two ways name the root: the producer's ``init(dir=X)`` names the folder *under which*
Waddle keeps its own (``X/.waddle``, as wandb keeps ``X/wandb``); a command's ``--dir``
names the Waddle folder itself. ``$WADDLE_DIR`` always names the Waddle folder itself.
Pure functions of their arguments and the environment: nothing here touches the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DIR = "WADDLE_DIR"
FOLDER_NAME = ".waddle"
DUCKDB_NAME = "waddle.duckdb"

PathArg = str | os.PathLike[str]


def root_dir(dir: PathArg | None = None) -> Path:
    """The Waddle folder of ``init(dir=...)``: ``$WADDLE_DIR``, else ``<dir>/.waddle``,
    else ``./.waddle`` (absolute, so a later ``chdir`` does not move the run)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).absolute()
    return (Path(dir) if dir else Path()).absolute() / FOLDER_NAME


def command_root(folder: PathArg | None = None) -> Path:
    """The Waddle folder a command's ``--dir`` names: ``folder`` itself, else
    ``$WADDLE_DIR``, else ``./.waddle`` (absolute)."""
    if folder:
        return Path(folder).absolute()
    return Path(os.environ.get(ENV_DIR) or FOLDER_NAME).absolute()


def log_dir(root: PathArg) -> Path:
    """Where the streams of a Waddle folder live."""
    return Path(root) / "log"


def state_dir(root: PathArg) -> Path:
    """Where consumers keep their committed offsets."""
    return Path(root) / "state"


def blobs_dir(root: PathArg) -> Path:
    """Where content-addressed files (media, saved files, artifacts) live."""
    return Path(root) / "blobs"


def artifacts_dir(root: PathArg) -> Path:
    """Where the version index of each artifact name lives (``<name>.json``)."""
    return Path(root) / "artifacts"


def duckdb_path(root: PathArg) -> Path:
    """The DuckDB writer's database when no ``--duckdb`` names another."""
    return Path(root) / DUCKDB_NAME


def snapshot_path(db_path: PathArg) -> Path:
    """Where the writer of ``db_path`` publishes its runs snapshot (``<stem>.runs.parquet``)."""
    path = Path(db_path)
    return path.with_name(f"{path.stem}.runs.parquet")

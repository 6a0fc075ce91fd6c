"""``waddle.Api()``: wandb's public API for notebooks, read from the local DuckDB store.

``Api().runs("project", filters={...})`` and ``Api().run("project/id")`` give runs with
``id``, ``name``, ``config``, ``summary``, ``state`` and ``history(keys=, samples=)``.
Before reading, the store is brought up to date with the log when no writer holds it
(the DuckDB writer, run once in this process, as ``waddle ls`` does); next to a running
writer the store is as fresh as that writer keeps it.

DuckDB (and pandas, for ``history``) are imported when a method is called, never at
``import waddle``: a training process does not pay for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from waddle import paths
from waddle.errors import UsageError

# wandb's filter operators that have a plain Python meaning here.
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda value, wanted: value == wanted,
    "$ne": lambda value, wanted: value != wanted,
    "$gt": lambda value, wanted: value is not None and value > wanted,
    "$gte": lambda value, wanted: value is not None and value >= wanted,
    "$lt": lambda value, wanted: value is not None and value < wanted,
    "$lte": lambda value, wanted: value is not None and value <= wanted,
    "$in": lambda value, wanted: value in wanted,
    "$nin": lambda value, wanted: value not in wanted,
}
# wandb's names for a run's fields, and the store's.
_FIELDS = {"state": "status", "display_name": "name", "group": "group_name"}


class Api:
    """The runs of a Waddle folder (``dir``, else ``$WADDLE_DIR``, else ``./.waddle``).

    wandb's arguments (``overrides``, ``timeout``, ``api_key``) are accepted and ignored:
    there is no server to reach.
    """

    def __init__(
        self,
        overrides: dict[str, Any] | None = None,
        timeout: float | None = None,
        api_key: str | None = None,
        dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.root = paths.command_root(dir)
        self.db_path = paths.duckdb_path(self.root)

    def runs(
        self,
        path: str | None = None,
        filters: dict[str, Any] | None = None,
        order: str | None = None,
        per_page: int | None = None,
    ) -> list[PublicRun]:
        """The runs of project ``path`` (``"entity/project"`` works too; None: all), newest
        first, that match ``filters`` (wandb's MongoDB-style subset: ``{"state":
        "finished", "config.lr": {"$gt": 0.01}, "tags": "best", "$and": [...]}``)."""
        project = path.split("/")[-1] if path else None
        with self._reader() as reader:
            if reader is None:
                return []
            from waddle.store import queries

            listed = queries.list_runs(reader.con, project)
            rows = [queries.get_run(reader.con, row["run_id"]) for row in listed]
        runs = [PublicRun(self, row) for row in rows if row is not None]
        return [run for run in runs if _matches(run.row, filters or {})]

    def run(self, path: str) -> PublicRun:
        """One run by ``"project/id"`` (or ``"entity/project/id"``, or the id alone)."""
        run_id = path.split("/")[-1]
        with self._reader() as reader:
            from waddle.store import queries

            row = queries.get_run(reader.con, run_id) if reader is not None else None
        if row is None:
            raise UsageError(f"no run {path!r} in {self.root}; `waddle ls` lists the runs")
        return PublicRun(self, row)

    def _reader(self) -> Any:
        """A reader of the store after bringing it up to date; a null context when the
        folder has no store and no log."""
        import contextlib

        from waddle.consumers.duckdb.refresh import refresh
        from waddle.store import schema

        refresh(self.root, self.db_path)
        if not self.db_path.exists():
            return contextlib.nullcontext(None)
        return schema.open_reader(self.db_path)


class PublicRun:
    """A run as the store holds it at the time it was read (wandb's ``public.Run``)."""

    def __init__(self, api: Api, row: dict[str, Any]) -> None:
        self._api = api
        self.row = row
        self.id: str = row["run_id"]
        self.name: str | None = row["name"]
        self.project: str | None = row["project"]
        self.state: str | None = row["status"]
        self.config: dict[str, Any] = row["config"] or {}
        self.summary: dict[str, Any] = row["summary"] or {}
        self.tags: list[str] = list(row.get("tags") or [])
        self.notes: str | None = row.get("notes")
        self.group: str | None = row.get("group_name")
        self.job_type: str | None = row.get("job_type")
        self.metric_defs: dict[str, Any] = row.get("metric_defs") or {}
        self.path = f"{self.project}/{self.id}"
        self.entity = None

    @property
    def dir(self) -> Path:
        return self._api.root

    def history(
        self, keys: list[str] | None = None, samples: int = 500, pandas: bool = True
    ) -> Any:
        """One row per logged step (``_step`` and each numeric metric, None where a step
        lacks it), at most ``samples`` rows spread evenly over the run: a pandas
        DataFrame when pandas is installed (and ``pandas``), else a list of dicts."""
        with self._api._reader() as reader:
            params: list[Any] = [self.id]
            query = "SELECT step, key, value FROM metrics WHERE run_id = ?"
            if keys is not None:
                query += " AND list_contains(?, key)"
                params.append(list(keys))
            found = reader.con.execute(query + " ORDER BY step, key", params).fetchall()
        by_step: dict[int, dict[str, Any]] = {}
        for step, key, value in found:
            by_step.setdefault(step, {"_step": step})[key] = value
        columns = ["_step", *sorted({key for _, key, _ in found})]
        rows = [{column: row.get(column) for column in columns} for row in by_step.values()]
        if len(rows) > samples > 0:
            rows = [rows[i * (len(rows) - 1) // (samples - 1)] for i in range(samples)]
        if pandas:
            try:
                import pandas as pd  # type: ignore[import-untyped,unused-ignore]
            except ImportError:
                return rows
            return pd.DataFrame(rows, columns=columns)
        return rows

    def __repr__(self) -> str:
        return f"<waddle Run {self.path} ({self.state})>"


def _matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    """Whether a run's row passes wandb-style ``filters``."""
    for name, wanted in filters.items():
        if name == "$and":
            if not all(_matches(row, part) for part in wanted):
                return False
        elif name == "$or":
            if not any(_matches(row, part) for part in wanted):
                return False
        elif not _test(_field(row, name), wanted):
            return False
    return True


def _field(row: dict[str, Any], name: str) -> Any:
    """``config.lr``, ``summary.loss`` (also ``summary_metrics.loss``), or a run field."""
    head, _, rest = name.partition(".")
    if head in ("config", "summary", "summary_metrics") and rest:
        return (row["config" if head == "config" else "summary"] or {}).get(rest)
    return row.get(_FIELDS.get(name, name))


def _test(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict) and wanted and all(op in _OPERATORS for op in wanted):
        try:
            return all(_OPERATORS[op](value, arg) for op, arg in wanted.items())
        except TypeError:  # a comparison across types: not a match
            return False
    if isinstance(value, list):  # tags: the run has that tag
        return wanted in value
    return bool(value == wanted)

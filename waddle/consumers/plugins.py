"""Finding a consumer by name: built-ins, the ``waddle.consumers`` entry points, module:Class.

A plug-in is a callable (usually the class) registered under the entry-point group
``waddle.consumers``, e.g. in the plug-in's ``pyproject.toml``::

    [project.entry-points."waddle.consumers"]
    counts = "waddle_counts:CountsConsumer"

``waddle-consume --consumer counts`` then calls ``CountsConsumer(root)`` with the Waddle
folder and runs what it returns. ``--consumer waddle_counts:CountsConsumer`` does the
same without an entry point. docs/consumers.md describes the interface.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from waddle.consumers.base import Consumer
from waddle.errors import UsageError
from waddle.ids import is_valid_id

GROUP = "waddle.consumers"
BUILTIN = {
    "duckdb": "waddle.consumers.duckdb.writer:DuckDBWriter",
    "lake": "waddle.consumers.lake.consumer:LakeConsumer",
}


def available() -> list[str]:
    """The names ``--consumer`` accepts without a module path."""
    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=GROUP)})


def find(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``, or named by ``module:attribute``."""
    if name in BUILTIN:
        return _import(BUILTIN[name], name)
    for entry in entry_points(group=GROUP):
        if entry.name == name:
            factory: Callable[..., Any] = entry.load()
            return factory
    if ":" in name:
        return _import(name, name)
    raise UsageError(
        f"no consumer named {name!r}: known names are {', '.join(available())}; a plug-in "
        f"registers under the entry-point group {GROUP!r}, or name it as module:Class"
    )


def _import(target: str, name: str) -> Callable[..., Any]:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"consumer {name!r}: cannot import {module_name!r} ({exc})") from exc
    try:
        factory: Callable[..., Any] = getattr(module, attribute)
        return factory
    except AttributeError:
        raise UsageError(f"consumer {name!r}: {module_name} has no {attribute!r}") from None


def create(
    name: str, root: Path, *, duckdb_path: Path | None = None, lake_path: Path | None = None
) -> Consumer:
    """Build the consumer ``name`` for the Waddle folder ``root``, checked for the protocol.

    The built-ins get their destination (``--duckdb``, ``--lake``); plug-ins get ``root``.
    """
    factory = find(name)
    destination = {"duckdb": duckdb_path, "lake": lake_path}
    consumer: Consumer = factory(root, destination[name]) if name in destination else factory(root)
    methods = ("start", "handle", "commit", "close")
    missing = [m for m in methods if not callable(getattr(consumer, m, None))]
    if missing or not hasattr(consumer, "durable"):
        raise UsageError(
            f"consumer {name!r} does not follow the protocol (missing: "
            f"{', '.join(missing) or 'durable'}); see docs/consumers.md"
        )
    if not is_valid_id(getattr(consumer, "name", None)):
        raise UsageError(
            f"consumer {name!r} has an invalid name {getattr(consumer, 'name', None)!r}: "
            "it becomes a file name under state/ (letters, digits, . _ -)"
        )
    return consumer

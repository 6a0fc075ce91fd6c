"""A dict with attribute access whose changes are recorded as events.

``run.config`` and ``run.summary`` are both this shape: ``config.lr = 0.1``,
``config["lr"]``, ``config.update({...})``. Each change is handed to ``record`` (which
writes an event) before it is kept, so an unencodable value raises at the call and
changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from waddle.errors import UsageError

Recorder = Callable[[dict[str, Any]], object]


def as_plain_dict(source: Any) -> dict[str, Any]:
    """A dict from a mapping, an ``argparse.Namespace``, a dataclass, a pydantic model, or
    the path of a YAML or JSON file (wandb's ``init(config="config.yaml")``)."""
    if source is None:
        return {}
    if isinstance(source, str | os.PathLike):
        return load_config_file(Path(source))
    if isinstance(source, Mapping):
        return dict(source)
    if hasattr(source, "model_dump"):
        dumped: dict[str, Any] = source.model_dump(mode="json")
        return dumped
    if hasattr(source, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(source)
    if hasattr(source, "__dict__"):
        return {k: v for k, v in vars(source).items() if not k.startswith("_")}
    raise UsageError(
        f"cannot use a {type(source).__qualname__} as a config: pass a dict, an "
        "argparse.Namespace, a dataclass or a pydantic model"
    )


def load_config_file(path: Path) -> dict[str, Any]:
    """A config file's values. wandb's files may wrap each value as ``{"value": v,
    "desc": ...}`` and carry a ``wandb_version`` key: the value is unwrapped, the key dropped.

    PyYAML is not a dependency of Waddle: a YAML file needs it installed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the config file {str(path)!r}: {exc}") from None
    if path.suffix.lower() == ".json":
        import json

        values = json.loads(text)
    else:
        try:
            import yaml
        except ImportError:
            raise UsageError(
                f"reading the YAML config {str(path)!r} needs PyYAML: pip install pyyaml"
            ) from None
        values = yaml.safe_load(text)
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UsageError(f"the config file {str(path)!r} must hold a mapping at the top")
    return {
        str(key): value["value"] if isinstance(value, dict) and "value" in value else value
        for key, value in values.items()
        if key != "wandb_version"
    }


def stringify_keys(value: Any) -> Any:
    """``value`` with every mapping key made a ``str``, at every depth, as wandb does with
    a config: a framework's config with int keys (``id2label``) must not break training."""
    if isinstance(value, Mapping):
        return {str(key): stringify_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [stringify_keys(item) for item in value]
    if isinstance(value, tuple):
        return tuple(stringify_keys(item) for item in value)
    return value


class RecordedDict:
    """Attribute and item access over a dict; every change goes through ``record`` first."""

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_items", dict(initial or {}))
        object.__setattr__(self, "_record", None)

    def _attach(self, record: Recorder | None) -> None:
        """Start (or stop, with None) recording changes as events."""
        object.__setattr__(self, "_record", record)

    def update(self, values: Any = None, allow_val_change: bool | None = None, **more: Any) -> None:
        """Set several keys at once: one event. ``allow_val_change`` is accepted for wandb."""
        changes = self._keyed({**as_plain_dict(values), **more})
        if changes:
            if self._record is not None:
                self._record(changes)
            self._items.update(changes)

    def _keyed(self, changes: dict[Any, Any]) -> dict[str, Any]:
        """The changes to record; a summary refuses a key that is not a string."""
        for key in changes:
            if not isinstance(key, str):
                raise UsageError(f"keys must be strings, got {key!r}")
        return changes

    def setdefaults(self, values: Mapping[str, Any]) -> None:
        """Set only the keys that are not set yet (wandb's ``config.setdefaults``)."""
        self.update({k: v for k, v in values.items() if k not in self})

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __setattr__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("_"):  # internals (and copy's probes) never come from the values
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __delitem__(self, key: str) -> None:
        raise UsageError("keys cannot be removed once recorded; set a new value instead")

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def keys(self) -> Any:
        return self.as_dict().keys()

    def items(self) -> Any:
        return self.as_dict().items()

    def values(self) -> Any:
        return self.as_dict().values()

    def as_dict(self) -> dict[str, Any]:
        """A copy of the current values."""
        return dict(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.as_dict()!r})"


class Config(RecordedDict):
    """``run.config``: hyperparameters; each change after init is a ``config`` event.

    Keys are made strings at every depth (``{0: "a"}`` is kept as ``{"0": "a"}``), as
    wandb does: frameworks hand over their model configs as they are.
    """

    def __init__(self, initial: Mapping[Any, Any] | None = None) -> None:
        super().__init__(stringify_keys(dict(initial or {})))

    def _keyed(self, changes: dict[Any, Any]) -> dict[str, Any]:
        keyed: dict[str, Any] = stringify_keys(changes)
        return keyed


class Summary(RecordedDict):
    """``run.summary``: the last logged value of each metric, unless set explicitly.

    Explicit sets are ``summary`` events at once and win over logged values; the merged
    summary is written once more at finish. ``define_metric(name, summary=...)`` makes
    it keep the ``min``, ``max`` or ``mean`` of a metric instead, or leave it out
    (``none``); the value stays flat (``summary["loss"]`` is the minimum), unlike
    wandb's ``{"min": ...}``.
    """

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "last", {})
        # metric or glob -> what to keep; later definitions of a name replace earlier ones
        self.rules: dict[str, str]
        self._modes: dict[str, str]
        self._means: dict[str, tuple[float, int, int]]
        object.__setattr__(self, "rules", {})
        object.__setattr__(self, "_modes", {})  # metric -> its rule, resolved once
        object.__setattr__(self, "_means", {})  # metric -> (total, count, seq of the last)

    def seed(self, last: Mapping[str, Any], explicit: Mapping[str, Any]) -> None:
        """Start from a resumed run's summary without recording it again."""
        self.last.update(last)
        self._items.update(explicit)

    def define(self, metric: str, mode: str) -> None:
        """Keep ``mode`` (min, max, mean, last, none) for ``metric`` (a name or a glob)."""
        self.rules.pop(metric, None)
        self.rules[metric] = mode
        self._modes.clear()
        if mode == "none":
            for key in [key for key in self.last if self._mode(key) == "none"]:
                del self.last[key]

    def _mode(self, key: str) -> str:
        mode: str | None = self._modes.get(key)
        if mode is None:
            mode = self.rules.get(key)
            if mode is None:  # the latest glob that matches, else the last value
                globs = (p for p in reversed(self.rules) if "*" in p and fnmatchcase(key, p))
                mode = next((self.rules[p] for p in globs), "last")
            self._modes[key] = mode
        return mode

    def observe(self, data: Mapping[str, Any], seq: int) -> None:
        """Fold the logged event ``seq`` into the summary, following the ``define_metric``
        rules. Idempotent: folding ``seq`` again (after an interrupted fold) changes
        nothing, key by key, so a caller may always retry."""
        last = self.last
        for key, value in data.items():
            mode = self._mode(key)
            if mode == "last" or not _is_number(value):
                if mode != "none":
                    last[key] = value
            elif mode == "mean":
                total, count, seen = self._means.get(key, (0.0, 0, -1))
                if seen != seq:
                    total, count = total + value, count + 1
                    self._means[key] = (total, count, seq)  # one store: all or nothing
                last[key] = total / count
            elif mode in ("min", "max") and _better(mode, value, last.get(key)):
                last[key] = value

    def as_dict(self) -> dict[str, Any]:
        return {**self.last, **self._items}


def _better(mode: str, value: float, kept: Any) -> bool:
    """Whether ``value`` replaces ``kept`` as the min (max); a NaN never wins over a number."""
    if not _is_number(kept) or kept != kept:  # nothing kept yet, or a NaN
        return True
    return value == value and (value < kept if mode == "min" else value > kept)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

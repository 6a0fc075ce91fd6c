"""A dict with attribute access whose changes are recorded as events.

``run.config`` and ``run.summary`` are both this shape: ``config.lr = 0.1``,
``config["lr"]``, ``config.update({...})``. Each change is handed to ``record`` (which
writes an event) before it is kept, so an unencodable value raises at the call and
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from waddle.errors import UsageError

Recorder = Callable[[dict[str, Any]], object]


def as_plain_dict(source: Any) -> dict[str, Any]:
    """A dict from a mapping, an ``argparse.Namespace``, a dataclass or a pydantic model."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return dict(source)
    if hasattr(source, "model_dump"):
        return source.model_dump(mode="json")
    if hasattr(source, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(source)
    if hasattr(source, "__dict__"):
        return {k: v for k, v in vars(source).items() if not k.startswith("_")}
    raise UsageError(
        f"cannot use a {type(source).__qualname__} as a config: pass a dict, an "
        "argparse.Namespace, a dataclass or a pydantic model"
    )


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
        changes = {**as_plain_dict(values), **more}
        for key in changes:
            if not isinstance(key, str):
                raise UsageError(f"keys must be strings, got {key!r}")
        if changes:
            if self._record is not None:
                self._record(changes)
            self._items.update(changes)

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
    """``run.config``: hyperparameters; each change after init is a ``config`` event."""


class Summary(RecordedDict):
    """``run.summary``: the last logged value of each metric, unless set explicitly.

    Explicit sets are ``summary`` events at once and win over logged values; the merged
    summary is written once more at finish.
    """

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "last", {})

    def seed(self, last: Mapping[str, Any], explicit: Mapping[str, Any]) -> None:
        """Start from a resumed run's summary without recording it again."""
        self.last.update(last)
        self._items.update(explicit)

    def as_dict(self) -> dict[str, Any]:
        return {**self.last, **self._items}

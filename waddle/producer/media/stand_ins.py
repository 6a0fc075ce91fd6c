"""Stand-ins for the wandb media types Waddle does not record: ``Html``, ``Object3D``
and the charts of ``wandb.plot``.

They build and accept every call, say once on stderr that the type is not recorded,
and are left out of ``log()``: the other values of the same call are logged. A training
job must not die because it also logs a chart. The media Waddle records (``Image``,
``Histogram``, ``Table``, ``Audio``, ``Video``) live in ``waddle.producer.media``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from waddle.producer.terminal import termwarn

__all__ = ["Html", "Object3D", "plot"]


# Attributes that the log's encoder and config readers test for (numpy, tensors, pydantic,
# namedtuples): a stand-in must not seem to have them.
_PROBED = frozenset(("ndim", "tolist", "item", "shape", "dtype", "model_dump", "_asdict", "keys"))


class MediaStandIn:
    """A value of a wandb media type that Waddle does not record yet."""

    made = False  # whether any was made in this process: until then log() looks for none

    def __new__(cls, *args: Any, **kwargs: Any) -> MediaStandIn:
        """Marks ``made`` here, not in ``__init__``: a stand-in unpickled from another
        process (a DataLoader worker's, a queue's) is made without ``__init__``."""
        MediaStandIn.made = True
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        name = type(self).__name__
        termwarn(
            f"wandb.{name} is not recorded by Waddle; "
            "such values are left out of log(), training goes on",
            repeat=False,
        )

    def __getattr__(self, name: str) -> Callable[..., None]:
        """Any method (``add_data``, ``add_file``, ``wait``, ...) accepts its arguments;
        what encoders probe for (``tolist``, ``ndim``, ...) is absent, so that ``log``
        sees a value it cannot encode and leaves it out instead of writing null."""
        if name.startswith("__") or name in _PROBED:
            raise AttributeError(name)
        return _nothing

    def __repr__(self) -> str:
        return f"<waddle stand-in for wandb.{type(self).__name__}: not recorded>"


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class Html(MediaStandIn):
    """``wandb.Html``."""


class Object3D(MediaStandIn):
    """``wandb.Object3D``."""


class Plot(MediaStandIn):
    """What a ``wandb.plot.*`` call returns."""


class _PlotModule:
    """``wandb.plot``: each chart function (``line``, ``scatter``, ...) gives a stand-in."""

    def __getattr__(self, name: str) -> Callable[..., Plot]:
        if name.startswith("__"):
            raise AttributeError(name)
        return Plot


plot = _PlotModule()


def without_stand_ins(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` less its stand-in values (alone or in a list); ``data`` itself if none."""
    if not MediaStandIn.made:
        return data
    dropped = [key for key, value in data.items() if _is_stand_in(value)]
    if not dropped:
        return data
    return {key: value for key, value in data.items() if key not in dropped}


def _is_stand_in(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(item, MediaStandIn) for item in value)
    return isinstance(value, MediaStandIn)

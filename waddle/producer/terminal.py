"""What the producer prints on the terminal, and the settings that can mute it.

``termlog`` and its kin are wandb's printing helpers; ``Settings`` is the object
``init(settings=...)`` takes. They live in the producer because ``init`` and ``finish``
use them; ``waddle.compat.surface`` re-exports them as part of the wandb surface.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["Settings", "is_silent", "termerror", "termlog", "termwarn"]

_TRUE = ("1", "true", "yes", "on")
_printed: set[str] = set()


def is_silent(settings: Any = None) -> bool:
    """Whether informational lines are muted: ``settings.silent``, else
    ``$WADDLE_SILENT``, else ``$WANDB_SILENT``."""
    chosen = getattr(settings, "silent", None) if settings is not None else None
    if chosen is not None:
        return str(chosen).strip().lower() in _TRUE
    value = os.environ.get("WADDLE_SILENT") or os.environ.get("WANDB_SILENT") or ""
    return value.strip().lower() in _TRUE


def _print(label: str, string: str, newline: bool, repeat: bool, prefix: bool) -> None:
    text = str(string)
    if not repeat:
        if text in _printed:
            return
        _printed.add(text)
    head = f"waddle: {label}" if prefix else ""
    lines = "\n".join(head + line for line in text.split("\n"))
    sys.stderr.write(lines + ("\n" if newline else ""))


def termlog(
    string: str = "", newline: bool = True, repeat: bool = True, prefix: bool = True
) -> None:
    """Print ``waddle: <string>`` to stderr, unless silenced: the current run's
    ``Settings(silent=True)``, ``WADDLE_SILENT`` or ``WANDB_SILENT``."""
    from waddle.producer.api import current  # here: api imports this module

    run = current()
    if not is_silent(run.settings if run is not None else None):
        _print("", string, newline, repeat, prefix)


def termwarn(string: str, newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """Print ``waddle: WARNING <string>`` to stderr (``repeat=False``: once per text)."""
    _print("WARNING ", string, newline, repeat, prefix)


def termerror(string: str, newline: bool = True, repeat: bool = True, prefix: bool = True) -> None:
    """Print ``waddle: ERROR <string>`` to stderr (``repeat=False``: once per text)."""
    _print("ERROR ", string, newline, repeat, prefix)


class Settings:
    """``wandb.Settings(...)``: keeps the values it is given; one never given reads None.

    Waddle runs offline with no service process, so most of wandb's settings have no
    meaning here; keeping them lets code that builds or reads settings run unchanged.
    """

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy and pickle probe dunders; they must not be None
            raise AttributeError(name)
        return None

    def update(self, values: dict[str, Any] | None = None, **more: Any) -> None:
        """Set several values at once (wandb's ``Settings.update``)."""
        self.__dict__.update({**(values or {}), **more})

    def __repr__(self) -> str:
        return f"Settings({self.__dict__!r})"

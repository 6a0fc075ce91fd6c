"""Media values for ``run.log``: images, histograms, tables, audio, video.

Each is a ``Media``; ``typed_values`` turns the media in one ``log()`` call into the
typed values the event carries (design.md section 4b, docs/media.md), writing their
blobs first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from waddle.blobs.store import BlobStore
from waddle.producer.media.audio import Audio
from waddle.producer.media.base import Media
from waddle.producer.media.histogram import Histogram
from waddle.producer.media.image import Image
from waddle.producer.media.table import Table
from waddle.producer.media.video import Video

__all__ = ["Audio", "Histogram", "Image", "Media", "Table", "Video", "typed_values"]


def is_media(value: object) -> bool:
    """A media value, or a non-empty list of them (wandb logs a list of images so)."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(isinstance(item, Media) for item in value)
    return isinstance(value, Media)


def typed_values(
    data: Mapping[str, Any], store: BlobStore, on_trouble: Callable[[str, OSError], None]
) -> Mapping[str, Any]:
    """``data`` with each media value (at any depth of nested dicts) replaced by its typed
    value; ``data`` itself when it holds none. A value whose blob cannot be written
    (``OSError``) is left out and reported to ``on_trouble(key, error)``; the other
    values are kept."""
    out: dict[str, Any] | None = None
    for key, value in data.items():
        if isinstance(value, Media) or is_media(value):
            converted: Any = _MISSING
            try:
                if isinstance(value, Media):
                    converted = value.to_value(store)
                else:
                    converted = [item.to_value(store) for item in value]
            except OSError as exc:
                on_trouble(key, exc)
        elif type(value) is dict and value:
            converted = typed_values(value, store, _prefixed(key, on_trouble))
            if converted is value:
                continue
        else:
            continue
        if out is None:
            out = dict(data)
        if converted is _MISSING:
            del out[key]
        else:
            out[key] = converted
    return data if out is None else out


_MISSING = object()


def _prefixed(key: str, report: Callable[[str, OSError], None]) -> Callable[[str, OSError], None]:
    """``report`` for the values inside ``key``: their keys read ``key.inner``."""
    return lambda inner, exc: report(f"{key}.{inner}", exc)

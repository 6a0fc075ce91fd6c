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
    if isinstance(value, list | tuple):
        return bool(value) and all(isinstance(item, Media) for item in value)
    return isinstance(value, Media)


def typed_values(
    data: Mapping[str, Any], store: BlobStore, on_trouble: Callable[[str, OSError], None]
) -> Mapping[str, Any]:
    """``data`` with each media value replaced by its typed value; ``data`` itself when it
    holds none. A value whose blob cannot be written (``OSError``) is left out and
    reported to ``on_trouble(key, error)``; the other values are kept."""
    keys = [key for key, value in data.items() if is_media(value)]
    if not keys:
        return data
    out = dict(data)
    for key in keys:
        value = out[key]
        try:
            if isinstance(value, Media):
                out[key] = value.to_value(store)
            else:
                out[key] = [item.to_value(store) for item in value]
        except OSError as exc:
            del out[key]
            on_trouble(key, exc)
    return out

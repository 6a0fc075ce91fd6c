"""What every media value shares: it becomes a typed value when ``run.log`` records it."""

from __future__ import annotations

from typing import Any

from waddle.blobs.store import BlobStore


class Media:
    """A value ``run.log`` turns into a typed value (``{"_type": ..., ...}``).

    Programmer errors (a shape that is not an image, a row of the wrong width) raise at
    construction; ``to_value`` only writes blobs, so what it raises is I/O trouble
    (``OSError``), which the run counts instead of raising.
    """

    def to_value(self, store: BlobStore) -> dict[str, Any]:
        raise NotImplementedError


def missing_extra(name: str, extra: str, module: str) -> ImportError:
    """The error for a media type whose encoder is not installed."""
    return ImportError(
        f"waddle.{name} needs {module}: pip install 'waddleml[{extra}]' (the '{extra}' extra)"
    )


def caption_field(text: str | None) -> dict[str, str]:
    """The ``caption`` field of a typed value: left out when there is none (a ``null`` in
    a line costs the encoder a second pass, which looks for NaN spelled as null)."""
    return {} if text is None else {"caption": text}

"""``waddle.Video``: frames (numpy ``T x C x H x W``, as wandb takes them) encoded as GIF or
MP4, or a video file kept as it is. Needs imageio (the ``video`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
from waddle.producer.media.base import Media, caption_field, missing_extra
from waddle.producer.media.image import to_uint8


class Video(Media):
    """A video logged under a key."""

    def __init__(
        self,
        data_or_path: Any,
        caption: str | None = None,
        fps: int = 4,
        format: str | None = None,
    ) -> None:
        import numpy as np  # here: `import waddle` does not load numpy

        try:
            import imageio.v3 as iio  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise missing_extra("Video", "video", "imageio") from None
        self.caption = caption
        self.fps = fps
        if isinstance(data_or_path, str | os.PathLike):
            path = Path(data_or_path)
            self._bytes = path.read_bytes()
            self.format = format or path.suffix.lstrip(".").lower()
            frame = iio.imread(path, index=0)
            self.height, self.width = int(frame.shape[0]), int(frame.shape[1])
            return
        frames = np.asarray(data_or_path)
        if frames.ndim != 4 or frames.shape[1] not in (1, 3, 4):
            raise UsageError(
                f"Video() takes frames as T x C x H x W (C = 1, 3, 4), got {frames.shape}"
            )
        frames = to_uint8(np.moveaxis(frames, 1, -1))
        self.format = format or "gif"
        self.height, self.width = int(frames.shape[1]), int(frames.shape[2])
        self._bytes = iio.imwrite("<bytes>", frames, extension=f".{self.format}", fps=fps)

    def to_value(self, store: BlobStore) -> dict[str, Any]:
        ref = store.put_bytes(self._bytes)
        return {
            "_type": "video",
            "sha256": ref.sha256,
            "size": ref.size,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            **caption_field(self.caption),
        }

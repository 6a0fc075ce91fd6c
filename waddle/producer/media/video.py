"""``waddle.Video``: frames (numpy ``T x C x H x W``, as wandb takes them) encoded as GIF,
MP4 or WebM, or a video file kept as it is. Needs the ``media`` extra: Pillow writes GIFs,
the ffmpeg that imageio-ffmpeg bundles writes MP4 (H.264) and WebM (VP9) and reads a
file's frame size.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
from waddle.producer.media.base import Media, caption_field, missing_extra
from waddle.producer.media.image import to_uint8
from waddle.producer.media.png import pillow

if TYPE_CHECKING:
    import numpy as np

# ffmpeg codecs by format; yuv420p is what browsers play, and it needs even sizes
CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}
FORMATS = ("gif", *CODECS)
# "Stream #0:0: Video: h264 (High) (avc1 / 0x31637661), yuv420p, 20x16, ...": after ", "
_FRAME_SIZE = re.compile(rb"Stream #.*: Video: .*?, (\d+)x(\d+)\b")


class Video(Media):
    """A video logged under a key."""

    def __init__(
        self,
        data_or_path: Any,
        caption: str | None = None,
        fps: float | None = None,
        format: str | None = None,
    ) -> None:
        if fps is None:  # wandb's default too
            fps = 4
        if not (isinstance(fps, int | float) and fps > 0):
            raise UsageError(f"Video() takes fps > 0, got {fps!r}")
        self.caption = caption
        self.fps = fps
        if isinstance(data_or_path, str | os.PathLike):
            path = Path(data_or_path)
            try:
                self._bytes = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError) as exc:
                raise UsageError(f"Video() found no video file at {path}") from exc
            self.format = format or path.suffix.lstrip(".").lower()
            self.width, self.height = file_size(path, self.format)
            return
        self.format = (format or "gif").lower()
        if self.format not in FORMATS:
            raise UsageError(f"Video() encodes frames as {', '.join(FORMATS)}, not {format!r}")
        frames = as_frames(data_or_path)
        if self.format == "gif":
            self._bytes = encode_gif(frames, fps)
        else:
            frames = even_sized(frames)
            self._bytes = encode_ffmpeg(frames, fps, self.format)
        self.height, self.width = int(frames.shape[1]), int(frames.shape[2])

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


def as_frames(data: Any) -> np.ndarray:
    """``T x C x H x W`` frames (C = 1, 3, 4) as ``T x H x W x C`` uint8."""
    import numpy as np  # here: `import waddle` does not load numpy

    frames = np.asarray(data)
    if frames.ndim != 4 or frames.shape[1] not in (1, 3, 4) or 0 in frames.shape:
        raise UsageError(f"Video() takes frames as T x C x H x W (C = 1, 3, 4), got {frames.shape}")
    return to_uint8(np.moveaxis(frames, 1, -1))


def even_sized(frames: np.ndarray) -> np.ndarray:
    """Frames with an odd height or width get their last row or column repeated: H.264
    and VP9 in yuv420p (what browsers play) halve both, so they must be even."""
    import numpy as np  # here: `import waddle` does not load numpy

    _, height, width, _ = frames.shape
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    return np.pad(frames, pad, mode="edge") if height % 2 or width % 2 else frames


def encode_gif(frames: np.ndarray, fps: float) -> bytes:
    """An animated GIF that loops, through Pillow."""
    pil = _pil()
    images = [pil.fromarray(frame[:, :, 0] if frame.shape[2] == 1 else frame) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 / fps),
        loop=0,
    )
    return buffer.getvalue()


def encode_ffmpeg(frames: np.ndarray, fps: float, format: str) -> bytes:
    """MP4 or WebM through imageio-ffmpeg's ffmpeg, by way of a temp file (MP4 puts its
    index at the end, so it cannot be streamed to a pipe)."""
    import numpy as np  # here: `import waddle` does not load numpy

    ffmpeg = _imageio_ffmpeg()
    channels = frames.shape[3]
    if channels != 3:  # ffmpeg is fed RGB: gray repeated, alpha dropped
        frames = np.repeat(frames, 3, axis=3) if channels == 1 else frames[:, :, :, :3]
    _, height, width, _ = frames.shape
    with tempfile.TemporaryDirectory(prefix="waddle-video-") as folder:
        path = os.path.join(folder, f"video.{format}")
        writer = ffmpeg.write_frames(
            path,
            (width, height),
            fps=fps,
            codec=CODECS[format],
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        return Path(path).read_bytes()


def file_size(path: Path, format: str) -> tuple[int, int]:
    """(width, height) of a video file: Pillow reads a GIF, ffmpeg anything else."""
    if format == "gif":
        with _pil().open(path) as image:
            return int(image.width), int(image.height)
    probe = subprocess.run(
        [_imageio_ffmpeg().get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    found = _FRAME_SIZE.search(probe.stderr)
    if found is None:
        raise UsageError(f"Video() found no video stream in {path}")
    return int(found[1]), int(found[2])


def _pil() -> Any:
    found = pillow()
    if not found:
        raise missing_extra("Video", "media", "Pillow")
    return found


def _imageio_ffmpeg() -> Any:
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise missing_extra("Video", "media", "imageio-ffmpeg") from None
    return imageio_ffmpeg

"""``waddle.Image``: numpy arrays, PIL images, torch tensors and image files.

Arrays are ``H x W`` (grayscale) or ``H x W x C`` with C = 1, 3 or 4 (gray, RGB, RGBA);
a torch tensor is ``C x H x W`` (a numpy array in that layout is accepted too, as wandb
does). Floats are read as 0-1 and scaled to 0-255; integers are clipped to 0-255. Pixels
are encoded as PNG at construction (a bad shape fails at the call, and the cost is paid
by the line that made the image); a JPEG or PNG file is kept as it is, a file of another
format is read by Pillow (when installed) and encoded as PNG.
"""

from __future__ import annotations

import io
import logging
import os
from typing import TYPE_CHECKING, Any

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
from waddle.producer.media.base import Media, caption_field
from waddle.producer.media.png import encode_png, image_file_info, pillow

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger("waddle")
_CHANNELS = (1, 3, 4)
_PIL_MODES_KEPT = ("L", "LA", "RGB", "RGBA")


class Image(Media):
    """An image logged under a key (or a list of them under one key)."""

    def __init__(
        self,
        data_or_path: Any,
        mode: str | None = None,
        caption: object = None,
        file_type: str | None = None,
        **unrecorded: Any,
    ) -> None:
        if unrecorded:  # boxes, masks, classes, grouping: wandb's overlays
            names = ", ".join(sorted(unrecorded))
            logger.warning("waddle: Image(%s=...) is not recorded, the pixels are", names)
        self.caption = None if caption is None else str(caption)
        if isinstance(data_or_path, str | os.PathLike):
            try:
                with open(data_or_path, "rb") as file:
                    self._bytes = file.read()
            except (FileNotFoundError, IsADirectoryError) as exc:
                raise UsageError(f"Image() found no image file at {data_or_path}") from exc
            try:
                self.format, self.width, self.height = image_file_info(self._bytes)
                return
            except UsageError:
                data_or_path = decoded(self._bytes, data_or_path)
        pixels = as_pixels(data_or_path)
        self.height, self.width = int(pixels.shape[0]), int(pixels.shape[1])
        self.format = "png"
        self._bytes = encode_png(pixels)

    def to_value(self, store: BlobStore) -> dict[str, Any]:
        ref = store.put_bytes(self._bytes)
        return {
            "_type": "image",
            "sha256": ref.sha256,
            "size": ref.size,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            **caption_field(self.caption),
        }

    def __repr__(self) -> str:
        return f"<waddle.Image {self.width}x{self.height} {self.format}>"


def decoded(data: bytes, path: str | os.PathLike[str]) -> Any:
    """An image file that is neither PNG nor JPEG (GIF, BMP, WebP, TIFF, ...) as a PIL
    image, to be encoded as PNG; without Pillow, the error naming PNG and JPEG."""
    pil = pillow()
    if not pil:
        raise UsageError(
            f"Image() keeps PNG and JPEG files as they are; {path} is neither "
            "(install Pillow to record other formats as PNG)"
        )
    try:
        image = pil.open(io.BytesIO(data))
        image.load()  # the first frame of an animation
    except OSError as exc:  # PIL.UnidentifiedImageError is one
        raise UsageError(f"Image() cannot read {path} as an image: {exc}") from exc
    return image


def as_pixels(data: Any) -> np.ndarray:
    """``data`` as an ``H x W x C`` uint8 array; UsageError for what is not an image."""
    import numpy as np  # here: `import waddle` does not load numpy

    chw = False
    if type(data) is np.ndarray:  # the common case: none of the probes below
        array = data
    else:
        if type(data).__module__.startswith("PIL."):
            if data.mode not in _PIL_MODES_KEPT:
                data = data.convert("RGBA" if "A" in data.getbands() else "RGB")
            data = np.asarray(data)
        elif hasattr(data, "detach") and hasattr(data, "cpu"):  # a torch tensor
            data = data.detach().cpu().numpy()
            chw = True
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"Image() cannot read {type(data).__qualname__} as pixels") from exc
    if array.ndim == 3 and array.shape[-1] not in _CHANNELS and array.shape[0] in _CHANNELS:
        chw = True
    if array.ndim == 3 and chw:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[-1] not in _CHANNELS or 0 in array.shape:
        raise UsageError(
            f"Image() takes H x W or H x W x C (C = 1, 3, 4) pixels, or C x H x W for a "
            f"tensor; got an array of shape {tuple(array.shape)}"
        )
    return to_uint8(array)


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Pixels as uint8: floats (and bools) scaled from 0-1, integers clipped to 0-255."""
    import numpy as np  # here: `import waddle` does not load numpy

    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "f":
        scaled = np.nan_to_num(array.astype(np.float64), nan=0.0) * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if array.dtype.kind in "iu":
        clipped: np.ndarray = np.clip(array, 0, 255).astype(np.uint8)
        return clipped
    raise UsageError(f"Image() takes numeric pixels, got dtype {array.dtype}")

"""PNG encoding for ``waddle.Image``, and reading the size of a PNG or JPEG file.

Pillow encodes when it is installed; otherwise a small writer (stdlib zlib, no filter,
one IDAT chunk) does, so the producer never requires Pillow. Both produce 8-bit PNGs
that any reader decodes to the same pixels.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import TYPE_CHECKING, Any

from waddle.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# zlib's default: what Pillow uses too, so either encoder costs about the same
LEVEL = 6
# PNG color types by channel count: gray, gray+alpha, RGB, RGBA
_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}
_PIL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_pil: Any = None


def pillow() -> Any:
    """PIL.Image, or False when Pillow is not installed (looked up once)."""
    global _pil
    if _pil is None:
        try:
            from PIL import Image as pil_image  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            _pil = False
        else:
            _pil = pil_image
    return _pil


def encode_png(pixels: np.ndarray) -> bytes:
    """An ``H x W x C`` uint8 array (C = 1, 2, 3 or 4) as PNG bytes."""
    channels = pixels.shape[2]
    pil = pillow()
    if pil:
        buffer = io.BytesIO()
        image = pil.fromarray(pixels[:, :, 0] if channels == 1 else pixels, _PIL_MODES[channels])
        image.save(buffer, format="PNG", compress_level=LEVEL)
        return buffer.getvalue()
    return write_png(pixels)


def write_png(pixels: np.ndarray) -> bytes:
    """The stdlib encoder: every scanline with filter 0, one zlib stream."""
    import numpy as np  # here: `import waddle` does not load numpy

    height, width, channels = pixels.shape
    raw = np.empty((height, width * channels + 1), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = pixels.reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return b"".join(
        (
            SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), LEVEL)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def image_file_info(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) of PNG or JPEG bytes; UsageError for anything else."""
    if data.startswith(SIGNATURE) and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(JPEG_MAGIC):
        size = _jpeg_size(data)
        if size is not None:
            return ("jpeg", *size)
    raise UsageError("an image file must be a PNG or a JPEG (install Pillow for other formats)")


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame marker, or None."""
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = struct.unpack(">H", data[at + 2 : at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5 : at + 9])
            return width, height
        at += 2 + length
    return None

"""``waddle.Audio``: a waveform (numpy ``samples`` or ``samples x channels``, with
``sample_rate``) written as WAV, or an audio file kept as it is (its format, rate and
duration read from its header). Needs soundfile (the ``media`` extra; its wheel bundles
libsndfile).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
from waddle.producer.media.base import Media, caption_field, missing_extra


class Audio(Media):
    """Audio logged under a key."""

    def __init__(
        self, data_or_path: Any, sample_rate: int | None = None, caption: str | None = None
    ) -> None:
        try:
            import soundfile  # type: ignore[import-untyped, import-not-found, unused-ignore]
        except ImportError:
            raise missing_extra("Audio", "media", "soundfile") from None
        self.caption = caption
        if isinstance(data_or_path, str | os.PathLike):
            try:
                self._bytes = Path(data_or_path).read_bytes()
                info = soundfile.info(io.BytesIO(self._bytes))  # the bytes read once
            except (FileNotFoundError, IsADirectoryError) as exc:
                raise UsageError(f"Audio() found no audio file at {data_or_path}") from exc
            except soundfile.SoundFileError as exc:
                raise UsageError(f"Audio() cannot read {data_or_path}: {exc}") from exc
            self.format = str(info.format).lower()
            self.sample_rate, self.duration = int(info.samplerate), float(info.duration)
            return
        if sample_rate is None or not sample_rate > 0:
            raise UsageError(f"Audio() from samples needs sample_rate= > 0, got {sample_rate!r}")
        self._bytes, frames = encode_wav(data_or_path, int(sample_rate), soundfile)
        self.format = "wav"
        self.sample_rate = int(sample_rate)
        self.duration = frames / self.sample_rate

    def to_value(self, store: BlobStore) -> dict[str, Any]:
        ref = store.put_bytes(self._bytes)
        return {
            "_type": "audio",
            "sha256": ref.sha256,
            "size": ref.size,
            "format": self.format,
            "sample_rate": self.sample_rate,
            "duration": self.duration,
            **caption_field(self.caption),
        }


def encode_wav(samples: Any, sample_rate: int, soundfile: Any) -> tuple[bytes, int]:
    """(WAV bytes, frame count). Floats are read as -1 to 1 (16-bit PCM, as wandb writes);
    UsageError for what is not a waveform."""
    import numpy as np  # here: `import waddle` does not load numpy

    array = np.asarray(samples)
    if array.ndim not in (1, 2) or array.size == 0 or array.dtype.kind not in "fiu":
        raise UsageError(
            f"Audio() takes numeric samples as (frames,) or (frames, channels), got "
            f"{array.dtype} of shape {array.shape}"
        )
    if array.dtype not in (np.float32, np.float64, np.int16, np.int32):  # what soundfile takes
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int32)
    buffer = io.BytesIO()
    soundfile.write(buffer, array, sample_rate, format="WAV")
    return buffer.getvalue(), len(array)

"""``waddle.Audio``: a waveform (numpy, with ``sample_rate``) or an audio file, kept as WAV
or as the file's own format. Needs soundfile (the ``audio`` extra)."""

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
            import soundfile  # type: ignore[import-not-found, unused-ignore]
        except ImportError:
            raise missing_extra("Audio", "audio", "soundfile") from None
        self.caption = caption
        if isinstance(data_or_path, str | os.PathLike):
            info = soundfile.info(str(data_or_path))
            self._bytes = Path(data_or_path).read_bytes()
            self.format = info.format.lower()
            self.sample_rate, self.duration = int(info.samplerate), float(info.duration)
            return
        if sample_rate is None:
            raise UsageError("Audio() from samples needs sample_rate=")
        buffer = io.BytesIO()
        soundfile.write(buffer, data_or_path, sample_rate, format="WAV")
        self._bytes = buffer.getvalue()
        self.format = "wav"
        self.sample_rate = int(sample_rate)
        self.duration = len(data_or_path) / self.sample_rate

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

"""The real encoders of the ``media`` extra: Audio through soundfile, Video through Pillow
(GIF) and imageio-ffmpeg's ffmpeg (MP4, WebM), Image's Pillow paths (PIL input, JPEG
files kept, other formats re-encoded) and the stdlib PNG writer Pillow replaces. Every
blob is read back with the library's own decoder. Without an encoder, the error names
the extra (the import blocked in ``sys.modules``)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import waddle
from tests.helpers import of_type, read_events, waddle_dir
from waddle.blobs.store import BlobStore
from waddle.producer.media import png

soundfile = pytest.importorskip("soundfile")  # the test extra pulls the media extra in
imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
pil = pytest.importorskip("PIL.Image")


def logged(key: str) -> Any:
    """The value of ``key`` in the run's last metrics event, its blob checked against
    its hash and size; returns (value, blob bytes)."""
    value = [e["data"][key] for e in of_type(read_events(), "metrics") if key in e["data"]][-1]
    data = BlobStore(waddle_dir()).path(value["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == value["sha256"] and len(data) == value["size"]
    return value, data


def log(**values: Any) -> None:
    with waddle.init(project="media") as run:
        run.log(values)


# --- audio -------------------------------------------------------------------------------------


def test_samples_are_logged_as_a_wav_that_decodes_to_them() -> None:
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.cos(2 * np.pi * 220 * t)], axis=1)
    log(tone=waddle.Audio(stereo, sample_rate=8000, caption="A4"))
    value, data = logged("tone")
    assert value == {
        "_type": "audio",
        "sha256": value["sha256"],
        "size": value["size"],
        "format": "wav",
        "sample_rate": 8000,
        "duration": 1.0,
        "caption": "A4",
    }
    decoded, rate = soundfile.read(io.BytesIO(data))
    assert rate == 8000 and decoded.shape == stereo.shape
    assert np.abs(decoded - stereo).max() < 1e-4  # 16-bit PCM


def test_an_audio_file_is_kept_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "speech.flac"
    soundfile.write(path, np.zeros(22050, dtype=np.int16), 44100)
    log(speech=waddle.Audio(path))
    value, data = logged("speech")
    assert data == path.read_bytes()
    assert (value["format"], value["sample_rate"], value["duration"]) == ("flac", 44100, 0.5)


@pytest.mark.parametrize(
    ("data", "rate", "match"),
    [
        (np.zeros((2, 3, 4)), 8000, "shape"),
        (np.array(["a", "b"]), 8000, "numeric"),
        (np.zeros(0), 8000, "shape"),
        (np.zeros(10), None, "sample_rate"),
        ("no/such/file.wav", None, "no audio file"),
    ],
    ids=["3-D", "strings", "empty", "no rate", "missing file"],
)
def test_what_is_not_audio_fails_at_the_call(data: Any, rate: int | None, match: str) -> None:
    with pytest.raises(waddle.UsageError, match=match):
        waddle.Audio(data, sample_rate=rate)


def test_a_file_that_is_not_audio_fails_at_the_call(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not a sound")
    with pytest.raises(waddle.UsageError, match=r"notes\.wav"):
        waddle.Audio(path)


# --- video -------------------------------------------------------------------------------------

# Four frames of one flat color each: a GIF palette holds them exactly, a lossy codec
# keeps them within a few levels.
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)


def flat_frames(height: int, width: int) -> np.ndarray:
    """``T x C x H x W`` uint8, as wandb takes frames."""
    return np.broadcast_to(COLORS[:, :, None, None], (4, 3, height, width)).copy()


def test_frames_are_logged_as_a_looping_gif() -> None:
    log(clip=waddle.Video(flat_frames(6, 10), fps=5, caption="c"))
    value, data = logged("clip")
    assert {k: value[k] for k in ("format", "width", "height", "fps", "caption")} == {
        "format": "gif",
        "width": 10,
        "height": 6,
        "fps": 5,
        "caption": "c",
    }
    with pil.open(io.BytesIO(data)) as gif:
        assert (gif.format, gif.size, gif.n_frames, gif.info["loop"]) == ("GIF", (10, 6), 4, 0)
        for index, color in enumerate(COLORS):
            gif.seek(index)
            assert gif.info["duration"] == 200
            assert np.array_equal(np.asarray(gif.convert("RGB"))[0, 0], color)
    assert waddle.Video(flat_frames(2, 2), fps=None).fps == 4  # wandb's default for None


def ffmpeg_frames(data: bytes, suffix: str, tmp_path: Path) -> tuple[tuple[int, int], np.ndarray]:
    """((width, height), ``T x H x W x 3`` frames) of a video: ffmpeg writes each frame
    as a PNG, which Pillow reads."""
    source = tmp_path / f"decoded{suffix}"
    source.write_bytes(data)
    folder = tmp_path / "frames"
    folder.mkdir(exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(source)]
    subprocess.run([*command, str(folder / "%03d.png")], check=True, timeout=60)
    frames = []
    for path in sorted(folder.iterdir()):
        with pil.open(path) as frame:
            frames.append(np.asarray(frame.convert("RGB")))
    height, width = frames[0].shape[:2]
    return (width, height), np.stack(frames)


@pytest.mark.parametrize("format", ["mp4", "webm"])
def test_frames_are_logged_as_a_video_ffmpeg_decodes(tmp_path: Path, format: str) -> None:
    log(clip=waddle.Video(flat_frames(15, 21), fps=4, format=format))
    value, data = logged("clip")
    # odd sizes grow by a repeated row and column: yuv420p halves both
    assert (value["format"], value["width"], value["height"]) == (format, 22, 16)
    size, frames = ffmpeg_frames(data, f".{format}", tmp_path)
    assert size == (22, 16) and len(frames) == 4
    means = frames.reshape(4, -1, 3).mean(axis=1)
    assert np.abs(means - COLORS).max() < 12  # lossy, but each frame is its color


def test_gray_and_alpha_frames_are_encoded_as_color(tmp_path: Path) -> None:
    gray = np.full((2, 1, 4, 4), 200, dtype=np.uint8)
    rgba = np.full((2, 4, 4, 4), 90, dtype=np.uint8)
    log(gray=waddle.Video(gray, format="mp4"), rgba=waddle.Video(rgba, format="mp4"))
    for key, level in (("gray", 200), ("rgba", 90)):
        _, frames = ffmpeg_frames(logged(key)[1], ".mp4", tmp_path)
        assert abs(frames.mean() - level) < 6


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_a_video_file_is_kept_with_its_frame_size(tmp_path: Path, suffix: str) -> None:
    made = waddle.Video(flat_frames(12, 20), format=suffix[1:])
    path = tmp_path / f"made{suffix}"
    path.write_bytes(made._bytes)
    log(clip=waddle.Video(path))
    value, data = logged("clip")
    assert data == path.read_bytes()
    assert (value["format"], value["width"], value["height"]) == (suffix[1:], 20, 12)


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (np.zeros((4, 8, 8, 3)), {}, "T x C x H x W"),
        (np.zeros((8, 8)), {}, "T x C x H x W"),
        (np.zeros((1, 3, 2, 2)), {"format": "avi"}, "not 'avi'"),
        (np.zeros((1, 3, 2, 2)), {"fps": 0}, "fps"),
        ("no/such/clip.mp4", {}, "no video file"),
    ],
    ids=["channels last", "2-D", "format", "fps", "missing file"],
)
def test_what_is_not_video_fails_at_the_call(data: Any, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(waddle.UsageError, match=match):
        waddle.Video(data, **kwargs)


def test_a_file_that_is_not_video_fails_at_the_call(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_text("not a video")
    with pytest.raises(waddle.UsageError, match=r"clip\.mp4"):
        waddle.Video(path)


# --- images through Pillow ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"exif": b"Exif\x00\x00" + b"\x00" * 64}],
    ids=["baseline", "progressive", "exif"],
)
def test_a_jpeg_file_from_pillow_is_kept_as_the_users_jpeg(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    photo = tmp_path / "photo.jpg"
    pixels = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    pil.fromarray(pixels).save(photo, format="JPEG", quality=90, **options)
    log(photo=waddle.Image(photo))
    value, data = logged("photo")
    assert data == photo.read_bytes()
    assert (value["format"], value["width"], value["height"]) == ("jpeg", 53, 37)


@pytest.mark.parametrize("format", ["BMP", "GIF", "TIFF", "WEBP"])
def test_an_image_file_of_another_format_becomes_a_png(tmp_path: Path, format: str) -> None:
    path = tmp_path / f"plot.{format.lower()}"
    pixels = np.zeros((5, 7, 3), dtype=np.uint8)
    pixels[1:3, 2:6] = (255, 0, 0)  # two colors: exact in GIF's palette, WebP lossless
    pil.fromarray(pixels).save(
        path, format=format, **({"lossless": True} if format == "WEBP" else {})
    )
    log(plot=waddle.Image(path))
    value, data = logged("plot")
    assert (value["format"], value["width"], value["height"]) == ("png", 7, 5)
    with pil.open(io.BytesIO(data)) as decoded:
        assert decoded.format == "PNG"
        assert np.array_equal(np.asarray(decoded.convert("RGB")), pixels)


def test_an_unreadable_image_file_fails_at_the_call(tmp_path: Path) -> None:
    path = tmp_path / "plot.png.txt"
    path.write_text("not an image")
    with pytest.raises(waddle.UsageError, match=r"plot\.png\.txt"):
        waddle.Image(path)


@settings(max_examples=30, deadline=None)
@given(
    array=st.tuples(st.integers(1, 16), st.integers(1, 16), st.sampled_from([1, 2, 3, 4])).flatmap(
        lambda shape: hnp.arrays(np.uint8, shape)
    )
)
def test_the_stdlib_png_writer_and_pillow_agree(array: np.ndarray) -> None:
    """Pillow replaces the stdlib writer when installed: both must give the same pixels
    (each read by Pillow's decoder)."""
    for encoded in (png.write_png(array), png.encode_png(array)):
        with pil.open(io.BytesIO(encoded)) as decoded:
            assert np.array_equal(np.asarray(decoded).reshape(array.shape), array)


# --- without the media extra -------------------------------------------------------------------


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import module`` fail as it does when the package is not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(png, "_pil", None)  # Pillow is looked up again


@pytest.mark.parametrize(
    ("blocked", "make"),
    [
        ("soundfile", lambda: waddle.Audio(np.zeros(10), sample_rate=8000)),
        ("imageio_ffmpeg", lambda: waddle.Video(np.zeros((1, 3, 2, 2)), format="mp4")),
        ("PIL", lambda: waddle.Video(np.zeros((1, 3, 2, 2)))),
    ],
    ids=["Audio", "Video mp4", "Video gif"],
)
def test_without_its_encoder_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, blocked: str, make: Any
) -> None:
    without(monkeypatch, blocked)
    with pytest.raises(ImportError, match=r"pip install 'waddleml\[media\]'"):
        make()


def test_without_pillow_images_are_still_pngs_and_other_formats_name_pillow(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "plot.bmp"
    pil.new("RGB", (3, 2)).save(path)
    without(monkeypatch, "PIL")
    assert png.pillow() is False
    image = waddle.Image(np.full((2, 3), 7, dtype=np.uint8))
    assert image._bytes == png.write_png(np.full((2, 3, 1), 7, dtype=np.uint8))
    with pytest.raises(waddle.UsageError, match="install Pillow"):
        waddle.Image(path)

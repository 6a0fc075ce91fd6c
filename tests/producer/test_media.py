"""Media values in ``run.log``: images, histograms, tables, their blobs written before the
event that names them, and I/O trouble counted, never raised. The encoders of the
``media`` extra (audio, video, Pillow) are tested in ``tests/producer/media``."""

from __future__ import annotations

import hashlib
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import waddle
from tests.helpers import of_type, read_events, waddle_dir
from tests.small_disk import small_disk
from waddle.blobs.store import BlobStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # PNG color type -> channels


def decode_png(data: bytes) -> np.ndarray:
    """An independent reader for 8-bit PNGs (every filter type): ``H x W x C`` uint8."""
    assert data.startswith(PNG_SIGNATURE)
    at, idat, header = 8, b"", b""
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0] == zlib.crc32(
            kind + body
        )
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    channels = CHANNELS[color]
    stride = width * channels
    raw = zlib.decompress(idat)
    rows = np.zeros((height, stride), dtype=np.int32)
    previous = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        kind, row = line[0], np.frombuffer(line[1:], dtype=np.uint8).astype(np.int32)
        out = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            left = out[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 0:
                base = 0
            elif kind == 1:
                base = left
            elif kind == 2:
                base = up
            elif kind == 3:
                base = (left + up) // 2
            else:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                base = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            out[x] = (row[x] + base) & 0xFF
        rows[y] = previous = out
    return rows.astype(np.uint8).reshape(height, width, channels)


def logged(key: str) -> Any:
    """The value of ``key`` in the run's last metrics event holding it."""
    return [e["data"][key] for e in of_type(read_events(), "metrics") if key in e["data"]][-1]


def blob(value: dict[str, Any]) -> bytes:
    """The blob a typed value names, checked against its hash and size."""
    data = BlobStore(waddle_dir()).path(value["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == value["sha256"] and len(data) == value["size"]
    return data


# --- images ------------------------------------------------------------------------------------

pixels = st.tuples(
    st.integers(1, 24), st.integers(1, 24), st.sampled_from([None, 1, 3, 4])
).flatmap(lambda shape: hnp.arrays(np.uint8, shape[:2] if shape[2] is None else shape))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(array=pixels, caption=st.none() | st.text(max_size=20))
def test_an_image_round_trips_through_its_png(array: np.ndarray, caption: str | None) -> None:
    image = waddle.Image(array, caption=caption)
    value = image.to_value(BlobStore(waddle_dir()))
    height, width = array.shape[:2]
    assert value == {
        "_type": "image",
        "sha256": value["sha256"],
        "size": value["size"],
        "format": "png",
        "width": width,
        "height": height,
        **({} if caption is None else {"caption": caption}),
    }
    decoded = decode_png(blob(value))
    assert decoded.shape == (height, width, 1 if array.ndim == 2 else array.shape[2])
    assert np.array_equal(decoded.reshape(array.shape), array)


def test_floats_are_read_as_zero_to_one_and_integers_are_clipped() -> None:
    store = BlobStore(waddle_dir())
    floats = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan]])
    assert decode_png(blob(waddle.Image(floats).to_value(store)))[0, :, 0].tolist() == [
        0,
        128,
        255,
        255,
        0,
        0,
    ]
    ints = np.array([[-5, 7, 300]], dtype=np.int64)
    assert decode_png(blob(waddle.Image(ints).to_value(store)))[0, :, 0].tolist() == [0, 7, 255]


def test_a_torch_tensor_is_channels_first() -> None:
    torch = pytest.importorskip("torch")
    tensor = torch.rand(3, 5, 7)
    value = waddle.Image(tensor).to_value(BlobStore(waddle_dir()))
    assert (value["width"], value["height"]) == (7, 5)
    expected = np.rint(tensor.permute(1, 2, 0).numpy().astype(np.float64) * 255).astype(np.uint8)
    assert np.array_equal(decode_png(blob(value)), expected)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(5),
        np.zeros((2, 3, 4, 5)),
        np.zeros((5, 5, 2)),
        np.zeros((0, 5)),
        [["a", "b"]],
        "no/such/image.png",
    ],
    ids=["1-D", "4-D", "two channels", "empty", "strings", "missing file"],
)
def test_a_shape_that_is_not_an_image_fails_at_the_call(bad: Any) -> None:
    with pytest.raises(waddle.UsageError, match="Image"):
        waddle.Image(bad)


def test_a_pil_image_is_read_by_its_mode() -> None:
    pil = pytest.importorskip("PIL.Image")
    rgba = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    store = BlobStore(waddle_dir())
    for image, expected in (
        (pil.fromarray(rgba, "RGBA"), rgba),
        (pil.fromarray(rgba[:, :, 0], "L"), rgba[:, :, :1]),
        (pil.fromarray(rgba[:, :, :3], "RGB").convert("P"), None),
    ):
        value = waddle.Image(image).to_value(store)
        decoded = decode_png(blob(value))
        assert (value["width"], value["height"]) == (3, 2)
        if expected is not None:
            assert np.array_equal(decoded, expected)


def jpeg(width: int, height: int) -> bytes:
    """The head of a baseline JPEG: what the size reader looks at, and some bytes after."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def test_a_jpeg_or_png_file_is_kept_as_it_is(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg(640, 480))
    png = tmp_path / "plot.png"
    store = BlobStore(waddle_dir())
    png.write_bytes(blob(waddle.Image(np.zeros((3, 4, 3))).to_value(store)))
    with waddle.init(project="media") as run:
        run.log({"photo": waddle.Image(photo, caption="cat"), "plot": waddle.Image(str(png))})
    photo_value, plot_value = logged("photo"), logged("plot")
    assert (photo_value["format"], photo_value["width"], photo_value["height"]) == (
        "jpeg",
        640,
        480,
    )
    assert blob(photo_value) == photo.read_bytes() and photo_value["caption"] == "cat"
    assert (plot_value["format"], plot_value["width"], plot_value["height"]) == ("png", 4, 3)
    assert blob(plot_value) == png.read_bytes()


def test_a_list_of_images_is_logged_under_one_key() -> None:
    with waddle.init(project="media") as run:
        run.log({"samples": [waddle.Image(np.full((2, 2), i)) for i in range(3)], "loss": 0.5})
    values = logged("samples")
    assert [v["_type"] for v in values] == ["image"] * 3
    assert [decode_png(blob(v))[0, 0, 0] for v in values] == [0, 1, 2]
    assert logged("loss") == 0.5


# --- histograms --------------------------------------------------------------------------------


def test_a_histogram_is_inline_and_counts_only_finite_values() -> None:
    values = [1.0, 2.0, 2.0, 3.0, float("nan"), float("inf")]
    with waddle.init(project="media") as run:
        run.log({"h": waddle.Histogram(values, num_bins=4)})
        run.log({"g": waddle.Histogram(np_histogram=np.histogram([0, 1, 1], bins=2))})
    h = logged("h")
    assert h == {"_type": "histogram", "bins": [1.0, 1.5, 2.0, 2.5, 3.0], "counts": [1, 0, 2, 1]}
    assert logged("g") == {"_type": "histogram", "bins": [0.0, 0.5, 1.0], "counts": [1, 2]}
    assert not (waddle_dir() / "blobs").exists()  # nothing but the log


def test_a_histogram_that_cannot_be_fails_at_the_call() -> None:
    with pytest.raises(waddle.UsageError, match="edges"):
        waddle.Histogram(np_histogram=([1, 2], [0, 1]))
    with pytest.raises(waddle.UsageError, match="num_bins"):
        waddle.Histogram([1, 2], num_bins=0)
    with pytest.raises(waddle.UsageError):
        waddle.Histogram()


# --- tables ------------------------------------------------------------------------------------


def test_a_table_with_image_cells_is_a_json_blob() -> None:
    table = waddle.Table(
        columns=["id", "image", "score"], data=[[0, waddle.Image(np.zeros((2, 3))), 0.5]]
    )
    table.add_data(1, waddle.Image(np.ones((4, 5, 3))), np.float32(0.25))
    with waddle.init(project="media") as run:
        run.log({"preds": table})
    value = logged("preds")
    assert {k: value[k] for k in ("_type", "format", "columns", "nrows")} == {
        "_type": "table",
        "format": "json",
        "columns": ["id", "image", "score"],
        "nrows": 2,
    }
    body = orjson.loads(blob(value))
    assert body["columns"] == ["id", "image", "score"]
    assert [row[0] for row in body["data"]] == [0, 1] and body["data"][1][2] == 0.25
    cells = [row[1] for row in body["data"]]
    assert [(c["_type"], c["width"], c["height"]) for c in cells] == [
        ("image", 3, 2),
        ("image", 5, 4),
    ]
    for cell in cells:
        blob(cell)


def test_a_table_from_a_dataframe() -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    with waddle.init(project="media") as run:
        run.log({"t": waddle.Table(dataframe=frame)})
    assert orjson.loads(blob(logged("t"))) == {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}


def test_a_row_of_the_wrong_width_fails_at_the_call() -> None:
    with pytest.raises(waddle.UsageError, match="2 columns"):
        waddle.Table(columns=["a", "b"], data=[[1, 2], [3]])
    table = waddle.Table(columns=["a", "b"])
    with pytest.raises(waddle.UsageError, match="3 cells"):
        table.add_data(1, 2, 3)
    assert table.data == []


# --- the log path ------------------------------------------------------------------------------


def test_the_blob_is_there_before_the_event_and_scalars_stay_numbers() -> None:
    run = waddle.init(project="media")
    run.log({"loss": 1.0, "img": waddle.Image(np.zeros((2, 2)))})
    value = logged("img")  # read while the run is live: the blob is already in place
    blob(value)
    run.log({"loss": 0.5})
    run.finish()
    assert [e["data"].get("loss") for e in of_type(read_events(), "metrics")] == [1.0, 0.5]
    with pytest.raises(waddle.EncodeError):  # an object that is no media type stays misuse
        waddle.init(project="media", id="other").log({"x": object()})


def test_the_run_syncs_its_media_blobs_once_at_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[None] = []
    monkeypatch.setattr("os.sync", lambda: syncs.append(None))
    with waddle.init(project="media") as run:
        for i in range(3):
            run.log({"img": waddle.Image(np.full((2, 2), i))})
        assert syncs == []
    assert len(syncs) == 1
    with waddle.init(project="media", id="scalars"):
        pass
    assert len(syncs) == 1  # a run without media has nothing to sync


def test_media_inside_nested_dicts_are_typed_values() -> None:
    with waddle.init(project="media") as run:
        run.log({"val": {"img": waddle.Image(np.zeros((2, 2))), "acc": 0.5}, "loss": 1.0})
    value = logged("val")
    assert value["acc"] == 0.5 and value["img"]["_type"] == "image"
    blob(value["img"])


def test_media_gathered_with_commit_false_is_written_at_the_step() -> None:
    with waddle.init(project="media") as run:
        run.log({"img": waddle.Image(np.zeros((2, 2)))}, commit=False)
        run.log({"loss": 1.0})
    (event,) = of_type(read_events(), "metrics")
    assert event["step"] == 0 and set(event["data"]) == {"img", "loss"}
    blob(event["data"]["img"])


def test_a_full_disk_drops_the_image_with_a_warning_and_training_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", tmp_path / "log") as disk:
        run = waddle.init(project="media", root=disk.root)
        disk.fill()
        noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        with caplog.at_level(logging.WARNING, logger="waddle"):
            run.log({"loss": 1.0, "img": waddle.Image(noise)})
        assert run.dropped == 1
        assert any("ENOSPC" in record.getMessage() for record in caplog.records)
        disk.free()
        run.log({"loss": 0.5, "img": waddle.Image(noise)})
        run.finish()
        events = read_events(disk.root)
        metrics = of_type(events, "metrics")
        assert [sorted(e["data"]) for e in metrics] == [["loss"], ["img", "loss"]]
        assert of_type(events, "finish")[0]["dropped"] == {"blob ENOSPC": 1}
        assert BlobStore(disk.root).verify(metrics[1]["data"]["img"]["sha256"])
        assert not list((disk.root / "blobs" / "tmp").iterdir())

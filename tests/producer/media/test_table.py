"""``waddle.Table`` on the log path: rows go to orjson as they are, media cells become
typed values (their blobs first) on the way, and I/O trouble in a cell drops the table,
counted, while a cell that is not JSON is misuse raised at the call."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

import waddle
from tests.helpers import of_type, read_events, waddle_dir
from waddle.blobs.store import BlobRef, BlobStore


def logged_tables(key: str) -> list[dict[str, Any]]:
    return [e["data"][key] for e in of_type(read_events(), "metrics") if key in e["data"]]


def body(value: dict[str, Any]) -> Any:
    data = BlobStore(waddle_dir()).path(value["sha256"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == value["sha256"]
    return orjson.loads(data)


def test_cells_keep_their_values_and_image_cells_are_stored_first() -> None:
    image = waddle.Image(np.full((3, 2, 3), 7, dtype=np.uint8), caption="c")
    rows = [
        [np.int64(1), np.float32(0.5), {"k": [1, None]}, image],
        [2, float("inf"), {3: "three"}, None],
    ]
    with waddle.init(project="media") as run:
        run.log({"t": waddle.Table(columns=["i", "x", "d", "img"], data=rows)})
    (value,) = logged_tables("t")
    assert value["nrows"] == 2 and value["columns"] == ["i", "x", "d", "img"]
    table = body(value)
    assert [row[:3] for row in table["data"]] == [
        [1, 0.5, {"k": [1, None]}],
        [2, None, {"3": "three"}],
    ]
    cell = table["data"][0][3]
    assert (cell["_type"], cell["width"], cell["height"], cell["caption"]) == ("image", 2, 3, "c")
    assert BlobStore(waddle_dir()).verify(cell["sha256"])
    assert table["data"][1][3] is None


def test_the_same_table_at_every_step_is_one_blob() -> None:
    rows = [[i, f"label {i}"] for i in range(50)]
    with waddle.init(project="media") as run:
        for step in range(3):
            run.log({"t": waddle.Table(columns=["id", "label"], data=rows)}, step=step)
    values = logged_tables("t")
    assert len(values) == 3 and len({v["sha256"] for v in values}) == 1
    assert body(values[0]) == {"columns": ["id", "label"], "data": rows}


def test_an_image_cell_that_cannot_be_stored_drops_the_table_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = BlobStore.put_bytes

    def full_for_pngs(self: BlobStore, data: bytes) -> BlobRef:
        if data.startswith(b"\x89PNG"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(BlobStore, "put_bytes", full_for_pngs)
    table = waddle.Table(columns=["img"], data=[[waddle.Image(np.zeros((2, 2)))]])
    with waddle.init(project="media") as run:
        run.log({"t": table, "loss": 1.0})
        assert run.dropped == 1
    (event,) = of_type(read_events(), "metrics")
    assert event["data"] == {"loss": 1.0}
    assert of_type(read_events(), "finish")[0]["dropped"] == {"blob ENOSPC": 1}


@pytest.mark.parametrize("raised", [KeyboardInterrupt, waddle.UsageError, OSError])
def test_what_a_media_cell_raises_is_raised_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: type[BaseException]
) -> None:
    """orjson turns whatever its ``default`` hook raises into a TypeError; Ctrl-C while an
    image cell's blob is written must stay a KeyboardInterrupt (and I/O trouble an
    OSError, which the run counts), not become a table that "is not JSON"."""

    def interrupted(self: BlobStore, data: bytes) -> BlobRef:
        raise raised("while the blob was written")

    monkeypatch.setattr(BlobStore, "put_bytes", interrupted)
    table = waddle.Table(columns=["img"], data=[[waddle.Image(np.zeros((2, 2)))]])
    with pytest.raises(raised, match="while the blob was written"):
        table.to_value(BlobStore(tmp_path))


def test_a_cell_that_is_not_json_fails_at_the_call() -> None:
    table = waddle.Table(columns=["a"], data=[[object()]])
    with waddle.init(project="media") as run:
        with pytest.raises(waddle.EncodeError, match="a cell cannot be written as JSON"):
            run.log({"t": table})
        assert run.dropped == 0


def test_a_row_of_the_wrong_width_is_named_whichever_row_it_is() -> None:
    rows = [[1, 2]] * 5 + [[3]] + [[4, 5, 6]]
    with pytest.raises(waddle.UsageError, match="row has 1 cells but the table has 2"):
        waddle.Table(columns=["a", "b"], data=rows)
    frame = pytest.importorskip("pandas").DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert waddle.Table(dataframe=frame).data == [[1, "x"], [2, "y"]]

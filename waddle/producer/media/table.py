"""``waddle.Table``: rows of cells stored as a JSON blob (wandb's table JSON shape).

The blob is ``{"columns": [...], "data": [[...], ...]}``; an image cell becomes an image
value whose own blob is written first. A row of the wrong width fails at the call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from waddle.blobs.store import BlobStore
from waddle.errors import EncodeError, UsageError
from waddle.eventlog.record import _to_plain
from waddle.producer.media.base import Media


class Table(Media):
    """A table logged under a key; ``add_data`` appends a row."""

    def __init__(
        self,
        columns: Sequence[Any] | None = None,
        data: Sequence[Sequence[Any]] | None = None,
        rows: Sequence[Sequence[Any]] | None = None,
        dataframe: Any = None,
        **unused: Any,
    ) -> None:
        if dataframe is not None:
            columns = [str(name) for name in dataframe.columns]
            data = dataframe.itertuples(index=False, name=None)
        data = data if data is not None else rows
        if columns is None:
            columns = [f"Column_{i + 1}" for i in range(len(data[0]))] if data else []
        self.columns: list[str] = [str(name) for name in columns]
        self.data: list[list[Any]] = [list(row) for row in data or ()]
        width = len(self.columns)
        if any(size != width for size in set(map(len, self.data))):  # one check per width
            self._check_width(next(row for row in self.data if len(row) != width))

    def add_data(self, *row: Any) -> None:
        """Append one row; UsageError when it does not have one cell per column."""
        self._check_width(row)
        self.data.append(list(row))

    def _check_width(self, row: Sequence[Any]) -> None:
        if len(row) != len(self.columns):
            raise UsageError(
                f"Table row has {len(row)} cells but the table has {len(self.columns)} "
                f"columns ({', '.join(self.columns)})"
            )

    def add_column(self, name: str, data: Sequence[Any]) -> None:
        """Append a column; UsageError when it does not have one cell per row."""
        if len(data) != len(self.data):
            raise UsageError(f"column {name!r} has {len(data)} cells for {len(self.data)} rows")
        self.columns.append(str(name))
        for row, cell in zip(self.data, data, strict=True):
            row.append(cell)

    def get_column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.data]

    def to_value(self, store: BlobStore) -> dict[str, Any]:
        """The table's JSON as a blob. The rows go to orjson as they are: a media cell
        (an image) reaches ``default``, which writes its blob and gives its typed value,
        so a table without media costs no Python work per cell."""

        def cell(value: Any) -> Any:
            return value.to_value(store) if isinstance(value, Media) else _to_plain(value)

        try:
            body = orjson.dumps(
                {"columns": self.columns, "data": self.data},
                default=cell,
                option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
            )
        except TypeError as exc:
            cause = exc.__cause__  # orjson wraps whatever ``default`` raised in a TypeError
            if cause is not None and type(cause) is not TypeError:
                raise cause from None  # a cell's own: its blob's I/O trouble, misuse, Ctrl-C
            reason = f"a cell cannot be written as JSON ({exc})"
            raise EncodeError("Table", self.data, reason) from exc
        ref = store.put_bytes(body)
        return {
            "_type": "table",
            "sha256": ref.sha256,
            "size": ref.size,
            "format": "json",
            "columns": self.columns,
            "nrows": len(self.data),
        }

    def __repr__(self) -> str:
        return f"<waddle.Table {len(self.columns)} columns, {len(self.data)} rows>"

"""Events into column batches for the store's tables. Pure: no database, no files.

Rows are gathered column by column in Python lists and handed over as numpy arrays,
which DuckDB scans without a row-by-row path; this is what makes the writer fast.

Logged values (``metrics.data``, ``system.data``): a nested dict is flattened with
``.`` (``{"a": {"b": 1}}`` is key ``a.b``, as wandb shows it); an int or float is a
number (NaN and infinities included); anything else (a string, a bool, None, a list,
an empty dict, an int too large for a double) is a logged value of its own, kept as
JSON in ``logged_values`` for metrics and left out for system samples. A typed value (a
dict whose ``_type`` is one of ``TYPED``: an image, a histogram, a table, audio, video;
or a non-empty list of them) is neither: it is not flattened, and goes to the media
tables (``waddle.consumers.duckdb.media``). Only the slow path looks for them, so
batches of plain numbers cost what they did.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np

from waddle.eventlog.record import encode

_NUMBERS = {float, int}
_FLOAT, _INT = {float}, {int}
_BIGINT = (-(2**63), 2**63 - 1)
# Batches of fewer events are gathered as Python lists (``LongColumns._add_small``).
SMALL_BATCH = 64
_LONG = ("run", "key", "axis", "ts", "value")
_DATA = itemgetter("data")
_TS = itemgetter("ts")
# The ``_type`` of the typed values of docs/media.md.
TYPED = frozenset(("image", "histogram", "table", "audio", "video"))


def is_typed(value: Any) -> bool:
    """Whether ``value`` is a typed value, or a non-empty list of typed values."""
    if type(value) is dict:
        return value.get("_type") in TYPED
    return type(value) is list and bool(value) and all(map(is_typed, value))


def to_json(value: Any) -> str:
    """JSON text with NaN and infinities spelled as the log spells them."""
    return encode(value)[:-1].decode()


def flatten(data: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """``(key, value)`` pairs with nested dicts joined by ``.``; empty dicts stay values."""
    for key, value in data.items():
        if type(value) is dict and value and not is_typed(value):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def as_number(value: Any) -> float | None:
    """The value as a double, or None when it is not a number we store as one."""
    if type(value) in _NUMBERS:
        try:
            return float(value)
        except OverflowError:
            return None
    return None


class Codes:
    """Small integer codes for repeated strings (metric keys, run ids).

    Rows carry the code; the database thread joins it back to the string. Building an
    int array costs far less than handing millions of Python strings to DuckDB, which
    would hold the GIL while the next round is being parsed.
    """

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def encode(self, names: list[str]) -> np.ndarray:
        try:
            return np.fromiter(map(self.codes.__getitem__, names), np.int32, len(names))
        except KeyError:
            for name in names:
                self.codes.setdefault(name, len(self.codes))
            return np.fromiter(map(self.codes.__getitem__, names), np.int32, len(names))

    def table(self) -> dict[str, np.ndarray]:
        """The dictionary as columns ``code`` and ``name``."""
        return {
            "code": np.arange(len(self.codes), dtype=np.int32),
            "name": np.array(list(self.codes), dtype=object),
        }


class LongColumns:
    """Long-form rows ``(run_id, key, axis, ts, value)`` of numbers, column by column.

    ``axis`` is the step for metrics and the rank for system samples; run ids and keys
    are coded (``Codes``). Each ``add`` turns a batch into arrays at once; the common
    case (all values numbers, every event logging the same keys in the same order) is a
    handful of C-level passes with no Python loop per value.
    """

    def __init__(self, names: Codes) -> None:
        self.names = names
        self.columns: dict[str, list[np.ndarray]] = {n: [] for n in _LONG}
        self.rows = 0
        # Rows of small batches as Python lists (run, key, axis, ts, value), made arrays
        # together (``_flush``): a numpy call costs a microsecond or two whatever its
        # size, a dozen per batch, and a host of 3,000 live runs adds 10 events a run.
        self._small: tuple[list[Any], ...] = ([], [], [], [], [])

    def add(
        self,
        run_id: str,
        events: list[dict[str, Any]],
        axis: str | int,
        others: list[tuple[Any, ...]] | None = None,
        typed: list[tuple[Any, ...]] | None = None,
    ) -> int | None:
        """Add the ``data`` of ``events``; ``axis`` is a field name or a constant.
        Returns the largest axis value added (None for no events).

        Values that are not numbers go to ``others`` as ``(run_id, key, axis, ts, json)``
        (or are left out when ``others`` is None), except typed values, which go to
        ``typed`` as ``(key, axis, ts, value)`` (or are left out when it is None).
        ``axis`` must fit a BIGINT: the log's bounds on ``step`` see to it (an int beyond
        raises OverflowError here).
        """
        if not events:
            return None
        datas = list(map(_DATA, events))
        values = list(chain.from_iterable(map(dict.values, datas)))
        if len(events) < SMALL_BATCH:
            top = self._add_small(run_id, events, datas, values, axis)
            if top is not None:
                return top
        self._flush()  # rows stay in the order they were added
        array = None
        if set(map(type, values)) <= _NUMBERS:
            try:
                array = np.fromiter(values, np.float64, len(values))
            except OverflowError:
                array = None
        lengths: int | np.ndarray[Any, Any]  # values per event: one for all, or each's
        if array is None:
            keys, array, lengths = self._split(run_id, events, axis, others, typed)
            codes = self.names.encode(keys)
        else:
            # Every event logging the first one's keys in its order is one comparison of
            # two lists (orjson hands out the same key objects, so mostly by identity).
            keys = list(chain.from_iterable(datas))
            shape = list(datas[0])
            if keys == shape * len(datas):
                codes = np.tile(self.names.encode(shape), len(datas))
                lengths = len(shape)
            else:
                codes = self.names.encode(keys)
                lengths = np.fromiter(map(len, datas), np.int64, len(datas))
        count = len(events)
        if isinstance(axis, str):
            positions = np.fromiter(map(itemgetter(axis), events), np.int64, count)
        else:
            positions = np.full(count, axis, dtype=np.int64)
        times = np.fromiter(map(_TS, events), np.float64, count)
        rows = len(array)
        self.columns["run"].append(np.full(rows, self.names.encode([run_id])[0], np.int32))
        self.columns["key"].append(codes)
        self.columns["axis"].append(np.repeat(positions, lengths))
        self.columns["ts"].append(np.repeat(times, lengths))
        self.columns["value"].append(array)
        self.rows += rows
        return int(positions.max())

    def _add_small(
        self,
        run_id: str,
        events: list[dict[str, Any]],
        datas: list[dict[str, Any]],
        values: list[Any],
        axis: str | int,
    ) -> int | None:
        """``add`` of a small batch of floats whose axis fits a BIGINT, as lists; the
        largest axis value, or None when the batch is not one (``add`` goes on)."""
        times = list(map(_TS, events))
        if set(map(type, values)) != _FLOAT or set(map(type, times)) != _FLOAT:
            return None
        if isinstance(axis, str):
            positions = list(map(itemgetter(axis), events))
            if set(map(type, positions)) != _INT or not _BIGINT[0] <= min(positions):
                return None
            if max(positions) > _BIGINT[1]:
                return None
        else:
            positions = [axis] * len(events)
        lengths = list(map(len, datas))
        runs, keys, axes, stamps, numbers = self._small
        runs += repeat(run_id, len(values))
        keys += chain.from_iterable(datas)
        axes += chain.from_iterable(map(repeat, positions, lengths))
        stamps += chain.from_iterable(map(repeat, times, lengths))
        numbers += values
        self.rows += len(values)
        return int(max(positions))

    def _flush(self) -> None:
        """The small batches' rows into arrays, after the arrays added before them."""
        runs, keys, axes, stamps, numbers = self._small
        if not numbers:
            return
        self.columns["run"].append(self.names.encode(runs))
        self.columns["key"].append(self.names.encode(keys))
        self.columns["axis"].append(np.array(axes, dtype=np.int64))
        self.columns["ts"].append(np.array(stamps, dtype=np.float64))
        self.columns["value"].append(np.array(numbers, dtype=np.float64))
        self._small = ([], [], [], [], [])

    @staticmethod
    def _split(
        run_id: str,
        events: list[dict[str, Any]],
        axis: str | int,
        others: list[tuple[Any, ...]] | None,
        typed: list[tuple[Any, ...]] | None,
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The slow path: flatten each event, numbers here, typed values to ``typed``,
        the rest to ``others``."""
        keys: list[str] = []
        numbers: list[float] = []
        lengths: list[int] = []
        for event in events:
            count = 0
            for key, value in flatten(event["data"]):
                number = as_number(value)
                if number is not None:
                    keys.append(key)
                    numbers.append(number)
                    count += 1
                    continue
                position = event[axis] if isinstance(axis, str) else axis
                if is_typed(value):
                    if typed is not None:
                        typed.append((key, position, event["ts"], value))
                elif others is not None:
                    others.append((run_id, key, position, event["ts"], to_json(value)))
            lengths.append(count)
        return keys, np.array(numbers, dtype=np.float64), np.array(lengths, dtype=np.int64)

    def arrays(self) -> dict[str, np.ndarray]:
        """The rows as columns ``run, key, axis, ts, value, nan`` (run and key coded)."""
        self._flush()
        arrays = {name: np.concatenate(parts) for name, parts in self.columns.items()}
        # DuckDB reads NaN in a numpy float column as NULL (pandas' habit); this flag
        # lets the insert put NaN back, since a NaN loss must never become a null.
        arrays["nan"] = np.isnan(arrays["value"])
        return arrays


class RowColumns:
    """Rows of a small table, appended as tuples and handed over as object columns."""

    def __init__(self, columns: tuple[str, ...]) -> None:
        self.columns = columns
        self.rows: list[tuple[Any, ...]] = []

    def append(self, row: tuple[Any, ...]) -> None:
        self.rows.append(row)

    def arrays(self) -> dict[str, np.ndarray]:
        cells = list(zip(*self.rows, strict=True)) or [()] * len(self.columns)
        return {
            name: np.array(values, dtype=object)
            for name, values in zip(self.columns, cells, strict=True)
        }

"""The line codec: events to NDJSON bytes and back. Pure: no files, no clock.

A line is one JSON object terminated by ``\\n``. JSON has no NaN or infinities, so the
encoder writes them as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` and the
decoder turns those strings back into floats inside metric, system and summary values.
numpy scalars, 0-d arrays and torch 0-d tensors encode as plain numbers.

The limits of the format live here, once, and every reader and writer holds them: a line
nests objects and arrays at most ``MAX_DEPTH`` levels (the event object is the first),
and each integer field fits the column that stores it (``INT_RANGES``). ``encode``
refuses a deeper event (``EncodeError``), ``decode`` skips and reports a deeper line, and
``check_event`` refuses an integer out of its range, so nothing a reader accepts can fail
to encode again or to fit the store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, itemgetter, not_
from typing import Any

import orjson

from waddle.errors import EncodeError
from waddle.eventlog import collector
from waddle.limits import INT64_MAX, INT64_MIN, INT_RANGES, MAX_DEPTH, MAX_RANK, SEQ_RANGE

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_CLOSE_LIST, _CLOSE_DICT, _U = b"]}u"  # bytes as ints: ``int in bytes`` is one memchr


STATUSES = ("finished", "failed", "killed")
CONSOLE_STREAMS = ("stdout", "stderr")
METRIC_SUMMARIES = ("min", "max", "mean", "last", "none")
METRIC_GOALS = ("minimize", "maximize")

# The fields every reader may rely on, per event type (design.md section 3). The pydantic
# models in waddle.events describe the full schema; a test keeps the two in agreement.
REQUIRED_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "run": {
        "run_id": (str,),
        "project": (str,),
        "name": (str,),
        "config": (dict,),
        "tags": (list,),
        "notes": (str, type(None)),
        "group": (str, type(None)),
        "job_type": (str, type(None)),
        "context": (dict,),
    },
    "config": {"config": (dict,)},
    "metrics": {"step": (int,), "data": (dict,)},
    "summary": {"summary": (dict,)},
    "system": {"data": (dict,)},
    "console": {"stream": (str,), "text": (str,)},
    "artifact": {"name": (str,), "kind": (str,), "path": (str,), "size": (int,), "sha256": (str,)},
    "artifact_version": {
        "name": (str,),
        "artifact_type": (str,),
        "version": (int,),
        "digest": (str,),
        "manifest": (str,),
        "size": (int,),
        "files": (int,),
    },
    "artifact_use": {
        "name": (str,),
        "version": (int,),
        "digest": (str,),
        "alias": (str, type(None)),
    },
    "define_metric": {
        "metric": (str,),
        "step_metric": (str, type(None)),
        "summary": (str, type(None)),
        "hidden": (bool,),
        "goal": (str, type(None)),
    },
    "finish": {"exit_code": (int, type(None)), "status": (str,)},
    "skipped": {"reason": (str,)},
}
_SPELLED = {INT64_MIN: "-2**63", INT64_MAX: "2**63-1", MAX_RANK: "2**31-1"}
# The fewest objects and arrays a sound event of each type opens (the event, and the
# dicts and lists it must carry): what ``_shallow`` subtracts from a chunk's count.
_MIN_OPENERS = {
    "run": 4,
    "config": 2,
    "metrics": 2,
    "summary": 2,
    "system": 2,
    "console": 1,
    "artifact": 1,
    "artifact_version": 1,
    "artifact_use": 1,
    "define_metric": 1,
    "finish": 1,
    "skipped": 1,
}
_MOST_MIN_OPENERS = max(_MIN_OPENERS.values())
_NESTING = (dict, list, tuple)
# Which field of an event holds logged values whose non-finite strings become floats again.
_VALUE_FIELDS = {"metrics": "data", "system": "data", "summary": "summary"}


def _to_plain(value: Any) -> Any:
    """orjson's fallback: tensors and numpy values that it cannot take natively."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist") and hasattr(value, "ndim"):
        return value.tolist()
    raise TypeError(f"unsupported type {type(value).__qualname__}")


def _name_non_finite(value: Any) -> Any:
    """A copy of ``value`` with NaN and infinities spelled as strings (the slow path)."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {k: _name_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_name_non_finite(v) for v in value]
    if hasattr(value, "ndim") and hasattr(value, "item"):
        return _name_non_finite(value.item() if value.ndim == 0 else value.tolist())
    return value


def _encodes(value: Any) -> bool:
    try:
        orjson.dumps(value, default=_to_plain, option=_OPTIONS)
    except TypeError:
        return False
    return True


def _find_unencodable(
    value: Any, path: str, seen: set[int] | None = None, depth: int = 1
) -> EncodeError | None:
    """Walk ``value`` to the first key that orjson refuses, for an error that names it.

    None when the value is too deep: the walk passed ``MAX_DEPTH``, or every item of a
    container encodes alone and the container does not (orjson's own depth limit).
    """
    if depth > MAX_DEPTH:
        return None
    seen = set() if seen is None else seen
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in seen:
            return EncodeError(path, value, "the value contains itself")
        seen.add(id(value))
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return EncodeError(f"{path}[{key!r}]", key, "keys must be strings")
            where = f"{path}/{key}" if path else key
            if not _encodes(key):
                return EncodeError(where, key, "the key is not valid UTF-8")
            if not _encodes(item):
                return _find_unencodable(item, where, seen, depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if not _encodes(item):
                return _find_unencodable(item, f"{path}[{index}]", seen, depth + 1)
    elif isinstance(value, str):
        return EncodeError(path, value, "the string is not valid UTF-8")
    if isinstance(value, (Mapping, list, tuple)):
        return None  # every item encodes alone, the whole does not: it nests too deep
    return EncodeError(path or "<event>", value)


def encode(event: Mapping[str, Any], explain: bool = True) -> bytes:
    """One event as one line, ``\\n`` included. Raises ``EncodeError`` naming the bad key
    (``explain=False``: without looking for it, for a caller that will retry anyway).

    orjson writes NaN and infinities as ``null``; only when ``null`` appears in the line do
    we pay for a second pass that spells them out, so the common case is one dumps call.
    A line nested deeper than ``MAX_DEPTH`` is refused: no reader would take it.
    """
    try:
        line = orjson.dumps(event, default=_to_plain, option=_OPTIONS)
    except TypeError as exc:
        if not explain:
            raise EncodeError("", event, "a value is not JSON") from exc
        raise (_find_unencodable(event, "") or _too_deep_error(event)) from exc
    # The producer's hot path: each test is ``int in bytes``, one memchr with no argument
    # parsing (``find`` costs 3x as much on these lines; the slice's copy less than that).
    # A flat line's only closing brackets are its final "}}" (each dict and list closes
    # with one; brackets inside strings only send a line to the exact count).
    if _CLOSE_LIST in line or _CLOSE_DICT in line[:-3]:
        _check_depth(line)
    return _spelled(event, line)


def encode_accepted(value: Mapping[str, Any]) -> bytes:
    """``encode`` for a value made of events that a reader accepted (a WebSocket message
    of a thousand of them): ``decode`` skipped every line deeper than ``MAX_DEPTH``, so
    their depth is not checked again. For such a message the check always counted more
    braces than the limit and then parsed and walked it all: 1.35 against 0.22 µs an
    event."""
    return _spelled(value, orjson.dumps(value, default=_to_plain, option=_OPTIONS))


def _spelled(event: Mapping[str, Any], line: bytes) -> bytes:
    """``line`` (``event`` dumped), again with non-finite numbers spelled out if it may
    hold one: every ``null`` holds a "u" and a metrics envelope none, so unless a logged
    key or string has one, the word search is skipped."""
    if _U in line and line.find(b"null") >= 0:
        line = orjson.dumps(_name_non_finite(event), default=_to_plain, option=_OPTIONS)
    return line


def _check_depth(line: bytes) -> None:
    """Raise ``EncodeError`` if ``line`` nests deeper than ``MAX_DEPTH``."""
    if openers(line) > MAX_DEPTH:
        written = orjson.loads(line)  # what the line holds, numpy arrays and all
        if too_deep(written):
            raise _too_deep_error(written)


def openers(text: bytes) -> int:
    """How many objects and arrays ``text`` opens, at most: a bound on its depth.

    Brackets inside strings count too, which only makes the bound looser.
    """
    return text.count(b"{") + (text.count(b"[") if text.find(b"[") >= 0 else 0)


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` levels (itself the
    first). Level by level, without recursion, and never more than ``limit`` levels down,
    so a value that contains itself ends the walk too."""
    if not isinstance(value, _NESTING):
        return False
    level = [value]
    for _ in range(limit):
        level = [
            item
            for container in level
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, _NESTING)
        ]
        if not level:
            return False
    return True


def deep_field(event: Mapping[str, Any]) -> list[str]:
    """The field of ``event`` (and its key, for a dict of values) that nests too deep."""
    for name, value in event.items():
        if too_deep(value, MAX_DEPTH - 1):
            if isinstance(value, dict):
                for key, item in value.items():
                    if too_deep(item, MAX_DEPTH - 2):
                        return [str(name), str(key)]
            return [str(name)]
    return []


def _too_deep_error(event: Mapping[str, Any]) -> EncodeError:
    return EncodeError(
        "/".join(deep_field(event)) or "<event>",
        event,
        f"it nests dicts and lists more than {MAX_DEPTH} levels deep (the event counts as "
        "one), the limit every reader of the log holds",
    )


def restore_non_finite(values: dict[str, Any] | list[Any]) -> Any:
    """Turn ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` back into floats, in place.

    Iterative, so no nesting can exhaust the stack.
    """
    pending: list[Any] = [values]
    while pending:
        container = pending.pop()
        for key, value in container.items() if type(container) is dict else enumerate(container):
            if type(value) is str:
                number = _NON_FINITE.get(value)
                if number is not None:
                    container[key] = number
            elif type(value) is dict or type(value) is list:
                pending.append(value)
    return values


def _spell(low: int, high: int) -> str:
    return f"from {_SPELLED.get(low, low)} to {_SPELLED.get(high, high)}"


def check_event(event: Any) -> str | None:
    """Why ``event`` breaks the schema readers rely on, or None when it is sound.

    For a JSON-decoded ``metrics``, ``system`` or ``console`` event this is exactly as
    strict as the models in ``waddle.events``, so ``/ingest`` trusts it alone for those
    (a test holds the two together); other types also need their model.
    """
    if type(event) is not dict:
        return "line is not a JSON object"
    seq = event.get("seq")
    if type(seq) is not int or not SEQ_RANGE[0] <= seq <= SEQ_RANGE[1]:
        return f"seq must be an integer {_spell(*SEQ_RANGE)}"
    if type(event.get("ts")) not in (int, float):
        return "ts must be a number"
    kind = event.get("type")
    fields = REQUIRED_FIELDS.get(kind) if type(kind) is str else None
    if fields is None:
        return f"unknown event type {kind!r}"
    for name, types in fields.items():
        if name not in event or type(event[name]) not in types:
            return f"{kind} event needs {name!r} of type {'/'.join(t.__name__ for t in types)}"
    for name, (low, high) in INT_RANGES.get(str(kind), {}).items():
        value = event.get(name)
        if name not in event or (value is None and type(None) in fields.get(name, ())):
            continue
        if type(value) is not int or not low <= value <= high:
            return f"{kind} {name} must be an integer {_spell(low, high)}"
    if kind == "console" and event["stream"] not in CONSOLE_STREAMS:
        return f"console stream must be one of {', '.join(CONSOLE_STREAMS)}"
    if kind == "define_metric":
        if event["summary"] not in (None, *METRIC_SUMMARIES):
            return f"define_metric summary must be null or one of {', '.join(METRIC_SUMMARIES)}"
        if event["goal"] not in (None, *METRIC_GOALS):
            return f"define_metric goal must be null or one of {', '.join(METRIC_GOALS)}"
    if kind == "finish" and event["status"] not in STATUSES:
        return f"finish status must be one of {', '.join(STATUSES)}"
    return None


_SEQ, _TS, _TYPE, _STEP, _DATA, _STREAM, _TEXT = map(
    itemgetter, ("seq", "ts", "type", "step", "data", "stream", "text")
)
_TIMES = {int, float}
# The bulk of the log, checked in whole-list passes; other types go one by one.
_BULK = frozenset({"metrics", "system", "console"})
_STREAMS = frozenset(CONSOLE_STREAMS)


def sound(events: list[Any]) -> bool:
    """Whether ``check_event`` passes every one of ``events``: exactly its verdict.

    A chunk of the log is mostly ``metrics``, ``system`` and ``console`` events, checked
    together in whole-list passes; only the few others (a stream's ``run`` in its first
    chunk, ``summary`` and ``finish`` in its last) are checked one by one.
    """
    kinds = _kinds(events)
    if kinds is None:
        return False
    if set(kinds) <= _BULK:
        return _bulk_sound(events, kinds)
    bulk = list(map(_BULK.__contains__, kinds))
    return _bulk_sound(list(compress(events, bulk)), list(compress(kinds, bulk))) and not any(
        map(check_event, compress(events, map(not_, bulk)))
    )


def all_sound(events: list[Any]) -> bool:
    """True only when every one of ``events`` is a ``metrics``, ``system`` or ``console``
    event that ``check_event`` passes: what ``/ingest`` may trust without the models.

    Any other type answers False, sound or not (its model must see it).
    """
    kinds = _kinds(events)
    return kinds is not None and set(kinds) <= _BULK and _bulk_sound(events, kinds)


def _kinds(events: list[Any]) -> list[str] | None:
    """Each event's type; None when one is not a dict with a string type (which
    ``check_event`` refuses)."""
    if not set(map(type, events)) <= {dict}:
        return None
    try:
        kinds = list(map(_TYPE, events))
    except KeyError:
        return None
    return kinds if set(map(type, kinds)) <= {str} else None


def _of(kind: str, events: list[dict[str, Any]], kinds: list[str]) -> list[dict[str, Any]]:
    """The events of ``kind`` (``kinds`` are their types, all strings)."""
    return list(compress(events, map(kind.__eq__, kinds)))


def _bulk_sound(events: list[dict[str, Any]], kinds: list[str]) -> bool:
    """``check_event``'s verdict on every one of ``events`` (of the types ``kinds``, all in
    ``_BULK``) in a few passes over the whole list, one per field."""
    distinct = set(kinds)
    metrics = events if distinct == {"metrics"} else _of("metrics", events, kinds)
    consoles = _of("console", events, kinds) if "console" in distinct else []
    valued = list(compress(events, map("console".__ne__, kinds))) if consoles else events
    try:
        seqs = list(map(_SEQ, events))
        times = set(map(type, map(_TS, events)))
        datas = set(map(type, map(_DATA, valued)))
        steps = list(map(_STEP, metrics))
        streams = list(map(_STREAM, consoles))
        texts = set(map(type, map(_TEXT, consoles)))
    except KeyError:
        return False
    return (
        _within(seqs, SEQ_RANGE)
        and times <= _TIMES
        and datas <= {dict}
        and _within(steps, INT_RANGES["metrics"]["step"])
        and set(map(type, streams)) <= {str}
        and set(streams) <= _STREAMS
        and texts <= {str}
    )


def _within(values: list[Any], bounds: tuple[int, int]) -> bool:
    """Whether every one of ``values`` is an int (not a bool) within ``bounds``."""
    return (
        set(map(type, values)) <= {int}
        and bounds[0] <= min(values, default=bounds[0])
        and max(values, default=bounds[1]) <= bounds[1]
    )


@dataclass(frozen=True, slots=True)
class BadLine:
    """A complete line that was skipped: where it starts and why."""

    offset: int
    reason: str


def decode(buffer: bytes, base: int = 0) -> tuple[list[dict[str, Any]], int, list[BadLine]]:
    """Parse every complete line in ``buffer``.

    Returns the events, the number of bytes consumed (through the last ``\\n``; a torn
    final line is left for the caller to come back to) and the lines that were skipped,
    with offsets counted from ``base``.
    """
    end = buffer.rfind(b"\n") + 1
    lines = buffer[:end].split(b"\n")
    lines.pop()  # what follows the last "\n": the torn line, or nothing
    # The common chunk is all sound lines: parse them in one pass and check them after;
    # only a chunk with a bad (or empty) line takes the line-by-line path.
    events = loads_lines(lines)
    if events is None or not sound(events) or not shallow(buffer, lines, events):
        return _decode_lines(lines, end, base)
    _restore_values(buffer, events)
    return events, end, []


def shallow(text: bytes, lines: list[bytes], events: list[dict[str, Any]]) -> bool:
    """True when no line of ``lines`` nests deeper than ``MAX_DEPTH``.

    ``events`` are the lines' sound events, one per line, and ``text`` holds the lines
    (more is fine). Usually one count over the chunk settles it: the objects and arrays
    opened beyond what each event's type must open bound the depth of any one line.
    Otherwise each line's count bounds its depth, and only the few lines over the limit
    (a ``run`` event's git diff full of braces, a deeply nested value) are walked.
    """
    braces = text.count(b"{")
    lists = text.find(b"[") >= 0
    least = sum(map(_MIN_OPENERS.__getitem__, map(_TYPE, events)))
    if braces + (text.count(b"[") if lists else 0) - least + _MOST_MIN_OPENERS <= MAX_DEPTH:
        return True
    per_line = list(map(bytes.count, lines, repeat(b"{")))
    if lists:
        per_line = list(map(add, per_line, map(bytes.count, lines, repeat(b"["))))
    return not any(
        too_deep(event) for event, count in zip(events, per_line, strict=True) if count > MAX_DEPTH
    )


def loads_lines(lines: list[bytes]) -> list[Any] | None:
    """Every line parsed as JSON, in one C-level pass; None when one is not JSON (or blank).

    The cyclic collector is paused meanwhile (``waddle.eventlog.collector``).
    """
    with collector.paused():
        try:
            return list(map(orjson.loads, lines))
        except orjson.JSONDecodeError:
            return None


def _decode_lines(
    lines: list[bytes], end: int, base: int
) -> tuple[list[dict[str, Any]], int, list[BadLine]]:
    """``decode`` line by line: each bad line is skipped and reported with its offset."""
    events: list[dict[str, Any]] = []
    bad: list[BadLine] = []
    start = base
    for line in lines:
        if line:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                bad.append(BadLine(start, f"not valid JSON ({exc})"))
            else:
                problem = check_event(event)
                if problem is None and openers(line) > MAX_DEPTH and too_deep(event):
                    problem = f"nested deeper than {MAX_DEPTH} levels"
                if problem is None:
                    events.append(event)
                else:
                    bad.append(BadLine(start, problem))
        start += len(line) + 1
    _restore_values(b"".join(lines), events)
    return events, end, bad


def _restore_values(text: bytes, events: list[dict[str, Any]]) -> None:
    """Non-finite strings back to floats in the logged values of ``events`` (parsed from
    ``text``). Most chunks hold none: a scan of the bytes spares a walk of every event,
    and one for a single letter (memchr, far faster) mostly spares the scan for words.
    """
    if (text.find(b"N") < 0 or text.find(b'NaN"') < 0) and (
        text.find(b"I") < 0 or text.find(b'Infinity"') < 0
    ):
        return
    for event in events:
        field = _VALUE_FIELDS.get(event["type"])
        if field is not None:
            restore_non_finite(event[field])

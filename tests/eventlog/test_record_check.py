"""The codec's checks over whole chunks (waddle/eventlog/record.py): the whole-list passes
give exactly the verdicts of ``check_event`` event by event, and ``decode`` refuses
exactly the lines its line-by-line path refuses, with the same reasons.

Chunks mix every event type, sound and broken: wrong types, missing fields, integers out
of their columns, unknown enum values, nesting beyond ``MAX_DEPTH``, non-finite markers.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waddle.eventlog import record
from waddle.eventlog.record import (
    CONSOLE_STREAMS,
    METRIC_GOALS,
    METRIC_SUMMARIES,
    REQUIRED_FIELDS,
    STATUSES,
    all_sound,
    check_event,
    decode,
    encode,
    sound,
)
from waddle.limits import INT64_MAX, INT64_MIN, MAX_DEPTH

# A sound value for each required field, by name (the rest by type).
SOUND_FIELDS: dict[str, Any] = {
    "stream": CONSOLE_STREAMS[1],
    "status": STATUSES[0],
    "goal": METRIC_GOALS[0],
    "step": 3,
    "size": 10,
    "version": 1,
    "files": 2,
    "exit_code": 0,
}
BY_TYPE: dict[type, Any] = {str: "x", int: 1, bool: False, dict: {}, list: [], type(None): None}
KINDS = sorted(REQUIRED_FIELDS)
BULK = ["metrics", "system", "console"]


def deep(levels: int) -> Any:
    value: Any = "NaN"
    for index in range(levels):
        value = [value] if index % 2 else {"k": value}
    return value


LOGGED = st.dictionaries(
    st.sampled_from(["loss", "NaN", "x/y"]),
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["NaN", "Infinity", "-Infinity", "Infinity ", None, True, "{[" * 40]),
        st.sampled_from([deep(n) for n in range(MAX_DEPTH - 4, MAX_DEPTH + 2)]),
    ),
    max_size=3,
)
# What a field may hold instead: near misses for its kind of value, or anything else.
NEAR_MISSES: dict[str, list[Any]] = {
    "stream": ["stdin", "", None, 1],
    "status": ["done", None],
    "summary": ["median", [], None],
    "goal": ["up", 1],
    "type": ["telemetry", None, 3],
    "ts": ["1.5", None, True],
}
INTEGER_MISSES = [-1, INT64_MIN - 1, INT64_MAX + 1, 2**64 - 1, True, 1.0, None, "1"]
INTEGER_FIELDS = {"seq", "step", "size", "version", "files", "exit_code", "rank"}
OTHER_MISSES = [True, 1, 1.0, None, "x", [], {}, deep(MAX_DEPTH)]
ODD_VALUES = st.one_of(
    st.integers(-2, 2),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=2),
    st.sampled_from([*KINDS, *CONSOLE_STREAMS, *STATUSES, *METRIC_SUMMARIES, *METRIC_GOALS]),
    st.sampled_from([{"k": "NaN"}, {"Infinity": [1]}]),
)


def misses(name: str) -> st.SearchStrategy[Any]:
    """A value field ``name`` must not hold (near misses more often), or any other."""
    near = INTEGER_MISSES if name in INTEGER_FIELDS else NEAR_MISSES.get(name, OTHER_MISSES)
    return st.sampled_from(near) | ODD_VALUES


# The bulk types as often as all the others together.
KIND = st.one_of(st.sampled_from(BULK), st.sampled_from(KINDS))


def sound_event(kind: str, seq: int = 0) -> dict[str, Any]:
    """A sound event of ``kind`` (``check_event`` passes it)."""
    value: dict[str, Any] = {"seq": seq, "ts": 1.5, "type": kind}
    for name, types in REQUIRED_FIELDS[kind].items():
        value[name] = SOUND_FIELDS.get(name, BY_TYPE[types[0]])
    if kind == "define_metric":
        value["summary"] = METRIC_SUMMARIES[0]
    return value


@st.composite
def events(draw: st.DrawFn) -> Any:
    """An event of any type with its values drawn, half of them with one or two of their
    fields removed or changed, and a few not an object at all."""
    value = sound_event(draw(KIND), draw(st.integers(0, 9)))
    for name in {"data", "summary", "config"} & set(value):
        if type(value[name]) is dict:
            value[name] = draw(LOGGED)
    if value["type"] == "define_metric":
        value["summary"] = draw(st.sampled_from([None, *METRIC_SUMMARIES]))
    if draw(st.booleans()):
        return value
    for name in draw(st.lists(st.sampled_from(sorted(value)), min_size=1, max_size=2)):
        if draw(st.booleans()):
            value.pop(name, None)
        else:
            value[name] = draw(misses(name))
    return value if draw(st.integers(0, 20)) else draw(ODD_VALUES)


@pytest.mark.parametrize("kind", KINDS)
def test_the_events_drawn_start_sound(kind: str) -> None:
    assert check_event(sound_event(kind)) is None


def line_of(value: Any) -> bytes:
    """The value as one log line, as a foreign producer could write it (``encode`` would
    refuse some: too deep, or NaN spelled by hand)."""
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


@settings(max_examples=400)
@given(st.lists(events(), max_size=8))
def test_sound_is_check_event_on_every_event(values: list[Any]) -> None:
    expected = all(check_event(v) is None for v in values)
    assert sound(values) is expected
    bulk = all(type(v) is dict and v.get("type") in BULK for v in values)
    assert all_sound(values) is (expected and bulk)


@settings(max_examples=200)
@given(st.lists(st.sampled_from(KINDS), max_size=40), st.lists(events(), max_size=2), st.data())
def test_broken_events_anywhere_in_a_sound_chunk_are_found(
    kinds: list[str], odd: list[Any], data: st.DataObject
) -> None:
    """Sound chunks of every type with a few drawn events (sound or not) put anywhere."""
    values: list[Any] = [sound_event(kind, seq) for seq, kind in enumerate(kinds)]
    for value in odd:
        values.insert(data.draw(st.integers(0, len(values))), value)
    assert sound(values) is all(check_event(v) is None for v in values)


def broken_events() -> list[Any]:
    """Each event type with each of its fields missing, or holding each near miss."""
    broken: list[Any] = []
    for kind in KINDS:
        for name in sound_event(kind):
            near = INTEGER_MISSES if name in INTEGER_FIELDS else NEAR_MISSES.get(name, [])
            for miss in [*near, *OTHER_MISSES]:
                broken.append({**sound_event(kind), name: miss})
            broken.append({k: v for k, v in sound_event(kind).items() if k != name})
    return broken


@pytest.mark.parametrize("where", [0, 2, 5])
def test_every_field_broken_every_way_gets_check_events_verdict(where: int) -> None:
    """Every near miss of every field, alone in a sound chunk of every type: deterministic,
    so that no rare verdict depends on what hypothesis happens to draw."""
    chunk = [sound_event(kind, seq) for seq, kind in enumerate(BULK + KINDS)]
    for value in broken_events():
        values = [*chunk[:where], value, *chunk[where:]]
        assert sound(values) is (check_event(value) is None), value
        bulk = [value, *chunk[:3]]
        assert all_sound(bulk) is (check_event(value) is None and value.get("type") in BULK)


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), min_size=1, max_size=8), st.integers(0, 12))
def test_decode_refuses_exactly_the_lines_the_line_by_line_path_refuses(
    values: list[Any], flat: int
) -> None:
    """The fast path (one parse, whole-list checks, one depth bound) against ``decode``'s
    line-by-line path over the same lines: the same events, the same bad lines with the
    same reasons."""
    metrics = [
        line_of({"seq": s, "ts": 1, "type": "metrics", "step": s, "data": {}}) for s in range(flat)
    ]
    lines = [*metrics[: flat // 2], *map(line_of, values), *metrics[flat // 2 :]]
    text = b"".join(lines)
    got = decode(text, 7)
    expected = record._decode_lines([line[:-1] for line in lines], len(text), 7)
    assert json.dumps(got[0]) == json.dumps(expected[0])
    assert got[1:] == expected[1:]


def test_a_mixed_chunk_checks_only_its_few_other_events_one_by_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream's first and last chunks hold its run, summary and finish among thousands
    of metrics: only those three go through ``check_event``, and the chunk is taken."""
    logged = [
        sound_event("run"),
        *(
            {"seq": s, "ts": 1.5, "type": "metrics", "step": s, "data": {"loss": 0.5}}
            for s in range(1, 2000)
        ),
        {"seq": 2000, "ts": 1.5, "type": "console", "stream": "stdout", "text": "hi"},
        {"seq": 2001, "ts": 1.5, "type": "system", "data": {"cpu": 3.0}},
        {"seq": 2002, "ts": 1.5, "type": "summary", "summary": {"loss": 0.5}},
        {"seq": 2003, "ts": 1.5, "type": "finish", "exit_code": 0, "status": "finished"},
    ]
    checked: list[str] = []

    def counting(event: Any) -> str | None:
        checked.append(event["type"])
        return check_event(event)

    monkeypatch.setattr(record, "check_event", counting)
    events, _, bad = decode(b"".join(map(encode, logged)))
    assert [e["seq"] for e in events] == list(range(2004)) and bad == []
    assert checked == ["run", "summary", "finish"]


def test_a_run_event_with_a_diff_full_of_braces_keeps_its_chunk_on_the_fast_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dirty tree's ``git diff`` opens more braces than any line may nest; only that
    line is walked, and the chunk is not decoded line by line."""
    run = sound_event("run")
    run["context"] = {"git": {"dirty": True, "diff": "+    row = {'k': [1]}\n" * 500}}
    deep_line = {**sound_event("metrics", 1), "data": {"deep": deep(MAX_DEPTH - 2)}}
    logged = [run, deep_line, *(sound_event("metrics", seq) for seq in range(2, 500))]
    line_by_line = record._decode_lines
    monkeypatch.setattr(record, "_decode_lines", lambda *a: pytest.fail("line by line"))
    events, _, bad = decode(b"".join(map(encode, logged)))
    assert [e["seq"] for e in events] == list(range(500)) and bad == []
    monkeypatch.setattr(record, "_decode_lines", line_by_line)
    too_deep = {**deep_line, "data": {"deep": deep(MAX_DEPTH - 1)}}
    events, _, bad = decode(b"".join(map(line_of, [run, too_deep, *logged[2:]])))
    assert len(events) == 499 and [b.reason for b in bad] == [
        f"nested deeper than {MAX_DEPTH} levels"
    ]

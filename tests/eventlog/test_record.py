"""The line codec (waddle/eventlog/record.py): pure bytes in, events out.

Every decoding case is fed three ways (h11's habit): whole, byte by byte (nothing may come
out before the newline), and followed by a partial line (which must be left unconsumed).
Values are compared spelled by ``json.dumps`` (the ``canonical`` fixture), which tells
NaN from None and True from 1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from waddle.errors import EncodeError
from waddle.eventlog.record import (
    CONSOLE_STREAMS,
    REQUIRED_FIELDS,
    STATUSES,
    BadLine,
    all_sound,
    check_event,
    decode,
    encode,
    restore_non_finite,
)
from waddle.ids import MAX_RANK
from waddle.limits import INT64_MAX, INT64_MIN, MAX_DEPTH

NAN, INF = math.nan, math.inf
PARTIAL = b'{"seq":99,"ts":1.5,"type":"metrics","st'


def event(kind: str, seq: int = 0, /, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "ts": 1700000000.25, "type": kind, **fields}


# (id, event as logged, how it must decode: None when exactly as logged)
ROUND_TRIPS = [
    ("metrics", event("metrics", step=3, data={"loss": 0.5, "acc": 1}), None),
    ("unicode", event("metrics", step=0, data={"λ/ü 🦆": "naïve ✓", "": True}), None),
    (
        "non-finite",
        event("metrics", step=1, data={"loss": NAN, "up": INF, "down": -INF, "none": None}),
        None,
    ),
    ("nested", event("system", data={"gpu": [{"util": NAN}, {"temp": [INF, -INF, 0.0]}]}), None),
    ("summary", event("summary", summary={"best": {"loss": -INF, "text": "null"}}), None),
    (
        "numpy",
        event("metrics", step=2, data={"f32": np.float32(0.5), "i64": np.int64(7)}),
        event("metrics", step=2, data={"f32": 0.5, "i64": 7}),
    ),
    ("finish", event("finish", exit_code=0, status="finished", dropped={}), None),
]


def feed_whole(data: bytes) -> tuple[list[dict[str, Any]], list[BadLine], bytes]:
    events, used, bad = decode(data)
    return events, bad, data[used:]


def feed_bytewise(data: bytes) -> tuple[list[dict[str, Any]], list[BadLine], bytes]:
    """One byte at a time, keeping the unconsumed rest like a reader does."""
    events: list[dict[str, Any]] = []
    bad: list[BadLine] = []
    pending, base = b"", 0
    for index in range(len(data)):
        byte = data[index : index + 1]
        pending += byte
        got, used, skipped = decode(pending, base)
        if byte != b"\n":
            assert (got, used, skipped) == ([], 0, []), f"output before the newline at {index}"
        events += got
        bad += skipped
        pending, base = pending[used:], base + used
    return events, bad, pending


FEEDS = [feed_whole, feed_bytewise]
TRAILERS = [pytest.param(b"", id="complete"), pytest.param(PARTIAL, id="then-partial")]


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    ("logged", "expected"), [c[1:] for c in ROUND_TRIPS], ids=[c[0] for c in ROUND_TRIPS]
)
def test_round_trip_three_ways(
    canonical: Callable[[Any], str],
    feed: Callable[..., Any],
    trailer: bytes,
    logged: dict[str, Any],
    expected: dict | None,
) -> None:
    line = encode(logged)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    events, bad, rest = feed(line + trailer)
    assert canonical(events) == canonical([expected or logged])
    assert bad == []
    assert rest == trailer


GOOD = encode(event("metrics", 0, step=0, data={"x": 1}))
LATER = encode(event("metrics", 1, step=1, data={"x": 2}))

# (id, bytes, seqs decoded, offsets of the lines skipped as bad)
RAW_CASES = [
    ("two-lines", GOOD + LATER, [0, 1], []),
    ("whitespace", b' { "seq" : 0 , "ts" : 1 , "type" : "config" , "config" : {} } \n', [0], []),
    ("bad-json-between", GOOD + b'{"seq":1,\n' + LATER, [0, 1], [len(GOOD)]),
    ("schema-break", b'{"seq":0,"ts":1,"type":"metrics","step":"0","data":{}}\n' + LATER, [1], [0]),
    ("not-an-object", b"[1,2]\n" + GOOD, [0], [0]),
    ("invalid-utf8", GOOD + b'{"seq":1,"k":"\xff"}\n', [0], [len(GOOD)]),
    ("nul-block", b"\x00" * 16 + b"\n" + GOOD, [0], [0]),
    ("empty-line", GOOD + b"\n" + LATER, [0, 1], []),
]


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    ("data", "seqs", "bad_offsets"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES]
)
def test_decode_three_ways(
    feed: Callable[..., Any], trailer: bytes, data: bytes, seqs: list[int], bad_offsets: list[int]
) -> None:
    events, bad, rest = feed(data + trailer)
    assert [e["seq"] for e in events] == seqs
    assert [b.offset for b in bad] == bad_offsets
    assert all(b.reason for b in bad)
    assert rest == trailer


def test_decode_counts_offsets_from_base() -> None:
    events, used, bad = decode(GOOD + b"oops\n" + PARTIAL, base=1000)
    assert [e["seq"] for e in events] == [0]
    assert used == len(GOOD) + 5
    assert bad == [BadLine(1000 + len(GOOD), bad[0].reason)]
    assert "JSON" in bad[0].reason


NON_FINITE = {"nan": NAN, "up": INF, "down": -INF, "deep": {"list": [NAN, {"x": -INF}], "ok": 1.5}}
SPELLED = (
    b'{"nan":"NaN","up":"Infinity","down":"-Infinity",'
    b'"deep":{"list":["NaN",{"x":"-Infinity"}],"ok":1.5}}'
)


@pytest.mark.parametrize(
    ("kind", "field"), [("metrics", "data"), ("system", "data"), ("summary", "summary")]
)
def test_non_finite_numbers_are_spelled_and_come_back_as_floats(
    canonical: Callable[[Any], str], kind: str, field: str
) -> None:
    logged = event(kind, **{field: NON_FINITE}, **({"step": 0} if kind == "metrics" else {}))
    line = encode(logged)
    assert b'"%s":%s' % (field.encode(), SPELLED) in line
    assert b"null" not in line
    (decoded,), _, _ = decode(line)
    assert canonical(decoded[field]) == canonical(NON_FINITE)
    assert math.isnan(decoded[field]["deep"]["list"][0])


@pytest.mark.parametrize(
    ("value", "json_value"),
    [
        (np.float64(0.25), b"0.25"),
        (np.float32(0.5), b"0.5"),
        (np.float16(-2.0), b"-2.0"),
        (np.int64(7), b"7"),
        (np.int8(-3), b"-3"),
        (np.uint64(2**64 - 1), b"18446744073709551615"),
        (np.bool_(True), b"true"),
        (np.array(1.5), b"1.5"),
        (np.array(3), b"3"),
        (np.float32("nan"), b'"NaN"'),
        (np.array(-np.inf), b'"-Infinity"'),
        (np.array([1.0, np.nan]), b'[1.0,"NaN"]'),
    ],
    ids=repr,
)
def test_numpy_values_encode_as_plain_numbers(
    canonical: Callable[[Any], str], value: Any, json_value: bytes
) -> None:
    line = encode(event("metrics", step=0, data={"v": value, "nested": {"v": value}}))
    assert b'"data":{"v":%s,"nested":{"v":%s}}' % (json_value, json_value) in line
    (decoded,), _, _ = decode(line)
    assert canonical(decoded["data"]["v"]) == canonical(np.asarray(value).tolist())


class FakeScalarTensor:
    """All that waddle may rely on in a torch 0-d tensor: ``ndim == 0`` and ``item()``."""

    ndim = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


def fake_tensor(value: float) -> Any:
    return FakeScalarTensor(value)


def torch_tensor(value: float) -> Any:
    torch = pytest.importorskip("torch")
    return torch.tensor(value)


@pytest.mark.parametrize("make", [fake_tensor, torch_tensor], ids=["fake", "torch"])
@pytest.mark.parametrize(
    ("value", "json_value"), [(2.5, b"2.5"), (3, b"3"), (NAN, b'"NaN"'), (-INF, b'"-Infinity"')]
)
def test_zero_dim_tensors_encode_as_plain_numbers(
    make: Callable[[float], Any], value: float, json_value: bytes
) -> None:
    line = encode(event("metrics", step=0, data={"t": make(value), "in": [make(value)]}))
    assert b'"data":{"t":%s,"in":[%s]}' % (json_value, json_value) in line


class Opaque:
    """A value with no JSON meaning."""


def circular() -> dict[str, Any]:
    loop: dict[str, Any] = {"name": "loop"}
    loop["self"] = loop
    return {"graph": loop}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"model": Opaque()}, "model"),
        ({"a": {"b": {1, 2}}}, "a/b"),
        ({"a": [0.5, b"raw"]}, "a[1]"),
        ({"big": 2**70}, "big"),
        ({"ok": 1, "bad": "\udc80"}, "bad"),
        ({1: 0.5}, "[1]"),
        ({"a": {("t",): 0.5}}, "a[('t',)]"),
        ({"ok": 1, "file-\udcff": 0.5}, "file-\udcff"),
        (circular(), "graph/self"),
    ],
    ids=[
        "object",
        "set",
        "bytes-in-list",
        "huge-int",
        "surrogate",
        "int-key",
        "tuple-key",
        "surrogate-key",
        "circular",
    ],
)
def test_unencodable_values_raise_encode_error_naming_the_key(data: dict, path: str) -> None:
    try:
        with pytest.raises(EncodeError) as caught:
            encode(event("metrics", step=0, data=data))
    except RecursionError:
        caught = None  # failed below, outside the handler: pytest prints a 1000-frame chain slowly
    if caught is None:
        pytest.fail("encode() recursed without end instead of raising EncodeError", pytrace=False)
    assert caught.value.key.endswith(path)
    assert repr(caught.value.key) in str(caught.value)
    assert "nothing was written" in str(caught.value)


SAMPLES = {str: "x", int: 1, bool: False, dict: {}, list: [], type(None): None}


def valid_event(kind: str) -> dict[str, Any]:
    fields = {name: SAMPLES[types[0]] for name, types in REQUIRED_FIELDS[kind].items()}
    if kind == "finish":
        fields["status"] = STATUSES[0]
    if kind == "console":
        fields["stream"] = CONSOLE_STREAMS[0]
    if kind == "define_metric":
        fields.update(summary="min", goal="minimize")
    return event(kind, **fields)


@pytest.mark.parametrize("kind", sorted(REQUIRED_FIELDS))
def test_check_event_knows_every_required_field(kind: str) -> None:
    assert check_event(valid_event(kind)) is None
    for name in REQUIRED_FIELDS[kind]:
        broken = valid_event(kind)
        del broken[name]
        problem = check_event(broken)
        assert problem is not None and name in problem, f"{kind} without {name} passed"


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"seq": -1}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": 1.0}, "seq"),
        ({"ts": "now"}, "ts"),
        ({"ts": None}, "ts"),
        ({"type": "telemetry"}, "telemetry"),
        ({"type": 3}, "type"),
        ({"step": True}, "step"),
        ({"step": -1}, "step"),
        ({"data": []}, "data"),
    ],
    ids=repr,
)
def test_check_event_names_what_is_wrong(change: dict[str, Any], word: str) -> None:
    problem = check_event({**valid_event("metrics"), **change})
    assert problem is not None and word in problem


# Values that sit where the fields of a metrics or system event go: right and wrong types.
FIELD_VALUES = st.one_of(
    st.integers(-2, 2),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, 2**64 - 1]),
    st.booleans(),
    st.floats(allow_nan=False),
    st.none(),
    st.text(max_size=2),
    st.just({}),
    st.just({"loss": 1.0}),
    st.just([]),
)
ODD_EVENTS = st.one_of(
    st.builds(valid_event, st.sampled_from(sorted(REQUIRED_FIELDS))),
    st.dictionaries(
        st.sampled_from(["seq", "ts", "type", "step", "data"]),
        st.one_of(FIELD_VALUES, st.sampled_from(["metrics", "system", "console"])),
    ),
    st.builds(
        lambda kind, changes: {**valid_event(kind), **changes},
        st.sampled_from(["metrics", "system"]),
        st.dictionaries(st.sampled_from(["seq", "ts", "step", "data"]), FIELD_VALUES, max_size=2),
    ),
    FIELD_VALUES,
)


@given(st.lists(ODD_EVENTS, max_size=6))
def test_all_sound_passes_a_list_only_when_check_event_passes_each(events: list[Any]) -> None:
    if all_sound(events):
        assert [check_event(e) for e in events] == [None] * len(events)


@given(
    st.lists(
        st.builds(
            lambda kind, seq, ts, step: {**valid_event(kind), "seq": seq, "ts": ts, "step": step},
            st.sampled_from(["metrics", "system"]),
            st.integers(0, INT64_MAX),
            st.one_of(st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False)),
            st.integers(0, INT64_MAX),
        ),
        max_size=6,
    )
)
def test_all_sound_passes_every_sound_chunk_of_metrics_and_system(events: list[Any]) -> None:
    assert all_sound(events)


def test_finish_status_must_be_known() -> None:
    assert check_event({**valid_event("finish"), "status": "done"}) is not None
    assert all(check_event({**valid_event("finish"), "status": s}) is None for s in STATUSES)


@settings(deadline=None)
@given(data=st.data())
def test_any_events_split_anywhere_decode_to_the_same_events(
    data: st.DataObject,
    metric_data: st.SearchStrategy[dict[str, Any]],
    canonical: Callable[[Any], str],
) -> None:
    logged = [
        event("metrics", seq, step=seq, data=d)
        for seq, d in enumerate(data.draw(st.lists(metric_data, max_size=5)))
    ]
    stream = b"".join(map(encode, logged))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    events: list[dict[str, Any]] = []
    pending, base = b"", 0
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pending += stream[start:stop]
        got, used, bad = decode(pending, base)
        assert bad == []
        events += got
        pending, base = pending[used:], base + used
    assert pending == b""
    assert canonical(events) == canonical(logged)


# -- the limits: integers that fit their columns, and one nesting depth -----------------


def nested_line(levels: int, inner: bytes = b"1", *, seq: int = 0, kind: bytes = b"[") -> bytes:
    """A metrics line whose value under ``deep`` nests ``levels`` lists (or dicts) around
    ``inner``: the line nests ``levels + 2`` deep. Written as bytes, as a foreign or older
    producer could have, since ``encode`` refuses what is too deep."""
    opening, closing = (b"[", b"]") if kind == b"[" else (b'{"k":', b"}")
    value = opening * levels + inner + closing * levels
    head = b'{"seq":%d,"ts":1.5,"type":"metrics","step":%d,"data":{"deep":' % (seq, seq)
    return head + value + b"}}\n"


@pytest.mark.parametrize("trailer", TRAILERS)
@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    "line",
    [
        nested_line(MAX_DEPTH - 1),
        nested_line(300),
        nested_line(990, b'"NaN"', kind=b"{"),
        nested_line(5000),
    ],
    ids=["limit+1", "300-lists", "990-dicts-around-NaN", "beyond-orjson"],
)
def test_a_line_nested_deeper_than_the_limit_is_a_bad_line(
    feed: Callable[..., Any], trailer: bytes, line: bytes
) -> None:
    good = nested_line(MAX_DEPTH - 2, seq=1)  # exactly MAX_DEPTH deep: taken
    events, bad, rest = feed(line + good + LATER.replace(b'"seq":1', b'"seq":2') + trailer)
    assert [e["seq"] for e in events] == [1, 2]
    assert [b.offset for b in bad] == [0]
    assert rest == trailer


def test_a_deep_line_among_many_flat_ones_is_found_in_one_chunk() -> None:
    """The chunk-level bound lets flat chunks through in one count; one deep line among
    thousands of flat ones must still be found, wherever it sits."""
    flat = [encode(event("metrics", seq, step=seq, data={"x": seq})) for seq in range(3000)]
    for where in (0, 1500, 2999):
        lines = list(flat)
        lines[where] = nested_line(MAX_DEPTH, seq=where)
        events, used, bad = decode(b"".join(lines))
        assert len(events) == 2999 and used == len(b"".join(lines))
        assert [b.reason for b in bad] == [f"nested deeper than {MAX_DEPTH} levels"]


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


@st.composite
def nested_values(draw: st.DrawFn) -> Any:
    """A value nested about as deep as the limit, in dicts and lists, with brackets in
    strings too (which only ever make the count of brackets larger)."""
    value: Any = draw(st.sampled_from([1, "NaN", "[[{", "]}", [], {}]))
    for _ in range(draw(st.integers(0, MAX_DEPTH + 2))):
        value = [value] if draw(st.booleans()) else {draw(st.sampled_from(["k", "{["])): value}
    return value


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.lists(nested_values(), max_size=3), min_size=1, max_size=8),
    st.sampled_from(["metrics", "system", "summary"]),
)
def test_decode_takes_exactly_the_lines_within_the_limit(
    values: list[list[Any]], kind: str
) -> None:
    field = "summary" if kind == "summary" else "data"
    events = [
        event(kind, seq, **{field: {f"v{i}": v for i, v in enumerate(vs)}}, step=seq)
        for seq, vs in enumerate(values)
    ]
    text = b"".join(orjson.dumps(e) + b"\n" for e in events)
    decoded, _, bad = decode(text)
    within = [e["seq"] for e in events if depth_of(e) <= MAX_DEPTH]
    assert [e["seq"] for e in decoded] == within
    assert len(bad) == len(events) - len(within)


@pytest.mark.parametrize("levels", [MAX_DEPTH - 1, 300, 10_000])
def test_encode_refuses_a_value_nested_deeper_than_the_limit_naming_the_key(levels: int) -> None:
    value: Any = 1.0
    for _ in range(levels):
        value = [value]
    with pytest.raises(EncodeError, match="more than 64 levels deep") as caught:
        encode(event("metrics", step=0, data={"fine": 1, "deep": value}))
    assert caught.value.key == "data/deep"


@settings(deadline=None, max_examples=150)
@given(
    st.recursive(
        st.sampled_from([1.5, NAN, -INF, None, "}]u", "x"]),
        lambda inner: (
            st.lists(inner, max_size=2)
            | st.dictionaries(st.sampled_from(["k", "u}"]), inner, max_size=2)
        ),
        max_leaves=MAX_DEPTH + 8,
    ),
    st.sampled_from(["x", "run"]),
)
def test_encode_refuses_exactly_the_values_beyond_the_limit_and_keeps_non_finite(
    value: Any, key: str
) -> None:
    """Whichever brackets, ``null``s and letters the line holds, the prefilters of the
    hot path never let a deep value through nor a NaN out as ``null``."""
    for _ in range(MAX_DEPTH - 2 - depth_of(value) + (key == "run")):  # at it, or one over
        value = [value] if isinstance(value, list) else {"k": value}
    sent = event("metrics", step=0, data={key: value})
    if depth_of(sent) > MAX_DEPTH:
        with pytest.raises(EncodeError, match="levels deep"):
            encode(sent)
        return
    (decoded,), _, bad = decode(encode(sent))
    assert bad == [] and depth_of(decoded) == depth_of(sent)
    assert json.dumps(decoded["data"]) == json.dumps(sent["data"])  # NaN not None, None kept


def test_encode_takes_a_value_exactly_at_the_limit() -> None:
    value: Any = {"x": 1.0}
    for _ in range(MAX_DEPTH - 3):
        value = {"k": value}
    line = encode(event("metrics", step=0, data={"deep": value}))
    (decoded,), _, bad = decode(line)
    assert bad == [] and depth_of(decoded) == MAX_DEPTH


def test_restore_non_finite_walks_any_depth_without_recursion() -> None:
    values: dict[str, Any] = {"v": "NaN"}
    for _ in range(20_000):
        values = {"k": values, "up": "Infinity"}
    restore_non_finite(values)
    inner = values
    for _ in range(20_000):
        assert inner["up"] == INF
        inner = inner["k"]
    assert math.isnan(inner["v"])


# (event type, field, lowest and highest value its column holds)
BOUNDS = [
    ("metrics", "seq", 0, INT64_MAX),
    ("metrics", "step", 0, INT64_MAX),
    ("artifact", "size", 0, INT64_MAX),
    ("finish", "exit_code", INT64_MIN, INT64_MAX),
    ("run", "rank", 0, MAX_RANK),
]


@pytest.mark.parametrize(("kind", "field", "low", "high"), BOUNDS, ids=[b[1] for b in BOUNDS])
def test_integer_fields_must_fit_their_columns(kind: str, field: str, low: int, high: int) -> None:
    for fits in (low, high):
        assert check_event({**valid_event(kind), field: fits}) is None
    for too_far in (low - 1, high + 1, 2**64 - 1):
        problem = check_event({**valid_event(kind), field: too_far})
        assert problem is not None and field in problem, too_far
        line = json.dumps({**valid_event(kind), field: too_far}).encode() + b"\n"
        events, _, bad = decode(line)
        assert events == [] and len(bad) == 1


def test_the_poison_events_of_issue_10_are_bad_lines_not_events() -> None:
    """Each was taken by every reader and then killed the DuckDB writer."""
    poison = [
        b'{"seq":0,"ts":1.5,"type":"finish","exit_code":18446744073709551615,"status":"failed"}\n',
        b'{"seq":0,"ts":1.5,"type":"artifact","name":"m","kind":"model","path":"m.pt",'
        b'"size":9223372036854775813,"sha256":"%s"}\n' % (b"0" * 64),
        nested_line(300),
        nested_line(990, b'"NaN"', kind=b"{"),
    ]
    for line in poison:
        events, used, bad = decode(line + LATER)
        assert [e["seq"] for e in events] == [1] and used == len(line + LATER)
        assert [b.offset for b in bad] == [0]

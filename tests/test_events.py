"""The pydantic event models: schemas/ is their generated output, and they agree with
the fields the log reader relies on (waddle.eventlog.record.REQUIRED_FIELDS)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import waddle
from tests.helpers import (
    SCHEMAS,
    assert_valid_by_schemas,
    raw_events,
    raw_log,
)
from waddle.eventlog.record import REQUIRED_FIELDS, check_event
from waddle.events import EVENT_ADAPTER, MODELS, schema_files
from waddle.ids import MAX_RANK
from waddle.limits import INT_RANGES, SEQ_RANGE
from waddle.web import ingest

REGENERATE = "run `python -m waddle.events schemas` and commit the result"

# One valid event per type, with every field the model knows about.
VALID: dict[str, dict[str, Any]] = {
    "run": {
        "run_id": "abc",
        "project": "p",
        "name": "n",
        "config": {"lr": 0.1},
        "tags": ["t"],
        "notes": None,
        "group": "g",
        "job_type": None,
        "context": {"pid": 1},
        "rank": 0,
        "resumed": False,
    },
    "config": {"config": {"lr": 0.2}},
    "metrics": {"step": 3, "data": {"loss": "NaN", "acc": 0.5}},
    "summary": {"summary": {"loss": 0.1}},
    "system": {"data": {"cpu/percent": 12.5}},
    "console": {"stream": "stdout", "text": "hello\n"},
    "artifact": {
        "name": "model",
        "kind": "weights",
        "path": "m.pt",
        "size": 10,
        "sha256": "a" * 64,
    },
    "artifact_version": {
        "name": "mnist",
        "artifact_type": "dataset",
        "version": 1,
        "digest": "b" * 64,
        "manifest": "c" * 64,
        "size": 1024,
        "files": 2,
        "aliases": ["latest"],
        "metadata": {"rows": 60000},
    },
    "artifact_use": {"name": "mnist", "version": 1, "digest": "b" * 64, "alias": "latest"},
    "define_metric": {
        "metric": "eval/*",
        "step_metric": "train/global_step",
        "summary": "min",
        "hidden": False,
        "goal": "minimize",
    },
    "finish": {"exit_code": 0, "status": "finished", "dropped": {}},
    "skipped": {"reason": "a corrupt line"},
}


def valid_event(kind: str) -> dict[str, Any]:
    return {"seq": 0, "ts": 1.5, "type": kind, **VALID[kind]}


def test_schema_files_match_the_models() -> None:
    expected = schema_files()
    on_disk = {path.name: path.read_bytes() for path in SCHEMAS.glob("*.json")}
    assert sorted(on_disk) == sorted(expected), f"schemas/ has the wrong files: {REGENERATE}"
    for name, text in expected.items():
        assert on_disk[name] == text, f"schemas/{name} is out of date: {REGENERATE}"


def test_models_cover_exactly_the_event_types_readers_know() -> None:
    assert sorted(MODELS) == sorted(REQUIRED_FIELDS)


@pytest.mark.parametrize("kind", sorted(REQUIRED_FIELDS))
def test_every_field_readers_rely_on_is_required_by_the_model(kind: str) -> None:
    fields = MODELS[kind].model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    assert set(REQUIRED_FIELDS[kind]) <= required
    assert {"seq", "ts", "type"} <= required


@pytest.mark.parametrize("kind", sorted(VALID))
def test_a_valid_example_passes_both(kind: str) -> None:
    event = valid_event(kind)
    assert EVENT_ADAPTER.validate_python(event).type == kind
    assert check_event(event) is None


RELIED_ON = [(kind, name) for kind, fields in sorted(REQUIRED_FIELDS.items()) for name in fields]


@pytest.mark.parametrize(("kind", "name"), RELIED_ON, ids=[f"{k}.{n}" for k, n in RELIED_ON])
def test_an_event_missing_a_relied_on_field_fails_both(kind: str, name: str) -> None:
    """Readers index these fields; a line without one must not pass as sound (even a
    nullable one: ``event["exit_code"]`` raises KeyError when the key is absent)."""
    event = {k: v for k, v in valid_event(kind).items() if k != name}
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python(event)
    assert check_event(event) is not None


def integer_bounds(schema: dict[str, Any]) -> tuple[int, int] | None:
    """The (minimum, maximum) of an integer property of a JSON Schema, None for another."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer":
            return option["minimum"], option["maximum"]
    return None


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_models_bound_integers_as_the_reader_and_the_columns_do(kind: str) -> None:
    properties = MODELS[kind].model_json_schema()["properties"]
    bounded = {name: integer_bounds(p) for name, p in properties.items()}
    bounded = {name: bounds for name, bounds in bounded.items() if bounds is not None}
    assert bounded.pop("seq") == SEQ_RANGE
    assert bounded == INT_RANGES.get(kind, {})


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("finish", "exit_code", 2**40),
        ("finish", "exit_code", -(2**63)),
        ("artifact", "size", 2**63 - 1),
        ("run", "rank", MAX_RANK),
    ],
)
def test_integers_the_columns_hold_pass_both(kind: str, field: str, value: int) -> None:
    event = {**valid_event(kind), field: value}
    EVENT_ADAPTER.validate_python(event)
    assert check_event(event) is None


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("finish", "exit_code", 2**63),
        ("finish", "exit_code", -(2**63) - 1),
        ("artifact", "size", 2**63 + 5),
        ("artifact", "size", -1),
        ("run", "rank", MAX_RANK + 1),
        ("run", "rank", -1),
        ("config", "seq", 2**63),
    ],
)
def test_integers_beyond_their_columns_fail_both(kind: str, field: str, value: int) -> None:
    event = {**valid_event(kind), field: value}
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python(event)
    problem = check_event(event)
    assert problem is not None and field in problem


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False),
    st.text(max_size=5),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def near_valid_events(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A valid event of ``kind`` with some fields replaced by any JSON value, or removed."""
    event = valid_event(kind)
    for name in list(event):
        if name == "type":
            continue
        choice = draw(st.sampled_from(["keep", "keep", "replace", "remove"]))
        if choice == "replace":
            event[name] = draw(JSON_VALUES)
        elif choice == "remove":
            del event[name]
    return event


@pytest.mark.parametrize("kind", sorted(VALID))
def test_what_the_model_accepts_the_reader_accepts(kind: str) -> None:
    @settings(max_examples=100, deadline=None)
    @given(near_valid_events(kind))
    def check(event: dict[str, Any]) -> None:
        try:
            EVENT_ADAPTER.validate_python(event)
        except ValidationError:
            return
        assert check_event(event) is None, event

    check()


CHECKED_ALONE = sorted(ingest.CHECKED_ALONE)

# Events of the types /ingest checks with check_event alone, each broken in one way the
# model notices; check_event must notice it too.
BAD_ALONE: dict[str, dict[str, Any]] = {
    "seq negative": {**valid_event("metrics"), "seq": -1},
    "seq bool": {**valid_event("metrics"), "seq": True},
    "seq float": {**valid_event("system"), "seq": 1.0},
    "seq string": {**valid_event("console"), "seq": "1"},
    "ts string": {**valid_event("metrics"), "ts": "1.5"},
    "ts bool": {**valid_event("metrics"), "ts": False},
    "ts null": {**valid_event("console"), "ts": None},
    "step negative": {**valid_event("metrics"), "step": -1},
    "step bool": {**valid_event("metrics"), "step": True},
    "step float": {**valid_event("metrics"), "step": 3.0},
    "step string": {**valid_event("metrics"), "step": "3"},
    "seq beyond int64": {**valid_event("system"), "seq": 2**63},
    "step beyond int64": {**valid_event("metrics"), "step": 2**63},
    "step null": {**valid_event("metrics"), "step": None},
    "metrics data list": {**valid_event("metrics"), "data": [1, 2]},
    "metrics data null": {**valid_event("metrics"), "data": None},
    "system data string": {**valid_event("system"), "data": "cpu"},
    "console stream other": {**valid_event("console"), "stream": "stdin"},
    "console stream case": {**valid_event("console"), "stream": "STDOUT"},
    "console stream null": {**valid_event("console"), "stream": None},
    "console text bytes-like": {**valid_event("console"), "text": [104, 105]},
    "console text null": {**valid_event("console"), "text": None},
}


@pytest.mark.parametrize("case", sorted(BAD_ALONE))
def test_a_bad_event_of_a_type_ingest_checks_alone_fails_both(case: str) -> None:
    event = BAD_ALONE[case]
    assert event["type"] in CHECKED_ALONE
    with pytest.raises(ValidationError):
        EVENT_ADAPTER.validate_python(event)
    assert check_event(event) is not None


# Values that sit on the edges the models draw: signs, bools for ints, the console streams,
# the ends of the integer columns.
EDGE_VALUES = st.sampled_from(
    ["stdout", "stderr", "stdin", "", -1, 0, True, False, 1.0, {}, []]
) | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, MAX_RANK, MAX_RANK + 1])


@st.composite
def one_field_off(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A valid event of ``kind`` with one field (not ``type``) replaced or removed."""
    event = valid_event(kind)
    name = draw(st.sampled_from(sorted(set(event) - {"type"})))
    if draw(st.booleans()):
        del event[name]
    else:
        event[name] = draw(EDGE_VALUES | JSON_VALUES)
    return event


@pytest.mark.parametrize("kind", CHECKED_ALONE)
def test_what_the_reader_accepts_the_model_accepts_for_types_ingest_checks_alone(
    kind: str,
) -> None:
    """/ingest trusts check_event alone for these types: it must be no more lenient."""

    @settings(max_examples=300, deadline=None)
    @given(one_field_off(kind) | near_valid_events(kind))
    def check(event: dict[str, Any]) -> None:
        if check_event(event) is None:
            EVENT_ADAPTER.validate_python(event)

    check()


def produce_every_kind() -> bytes:
    """A real run that writes run, config, metrics (with NaN), summary, system, finish."""
    run = waddle.init(
        id="all", config={"lr": 0.1}, tags=["x"], system_metrics=True, system_interval=0.02
    )
    run.config.wd = 0.01
    run.log({"loss": math.nan, "acc": 0.5, "inf": math.inf})
    run.log({"loss": 0.5}, step=10)
    run.summary["best"] = 0.5
    while b'"type":"system"' not in raw_log():
        run.log({"tick": 1})
    run.finish()
    return raw_log()


def test_real_producer_output_passes_the_models_the_reader_and_the_schema_files() -> None:
    data = produce_every_kind()
    events = raw_events(data)
    assert {e["type"] for e in events} == {
        "run",
        "config",
        "metrics",
        "summary",
        "system",
        "finish",
    }
    for event in events:
        EVENT_ADAPTER.validate_python(event)
        assert check_event(event) is None, event
    assert assert_valid_by_schemas(data) == len(events)
    assert orjson.loads(data.splitlines()[2])["data"]["loss"] == "NaN"


@pytest.mark.parametrize(
    "line",
    [
        b'{"seq":0,"ts":1.0,"type":"metrics","step":-1,"data":{}}\n',
        b'{"seq":0,"ts":1.0,"type":"finish","exit_code":0,"status":"done"}\n',
        b'{"seq":"0","ts":1.0,"type":"config","config":{}}\n',
    ],
)
def test_the_schema_files_reject_a_broken_event(line: bytes) -> None:
    with pytest.raises(AssertionError, match="breaks the schema"):
        assert_valid_by_schemas(line)

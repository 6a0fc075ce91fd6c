"""Run and stream ids: the one validity rule, generation, and init refusing bad ids."""

from __future__ import annotations

import pytest

import waddle
from tests.helpers import (
    waddle_dir,
)
from waddle.errors import InvalidIdError, UsageError
from waddle.ids import check_id, is_valid_id, new_run_id, run_id_of_stream, stream_id

VALID = ["a", "0", "Run_1", "abc-DEF.2_x", "a" * 128, "x..y", "a."]
INVALID = [
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "/abs",
    "a\\b",
    "a" * 129,
    "é",
    "run-ü",
    "-lead",
    "_lead",
    ".hidden",
    "a b",
    "tail\n",
    "nul\x00",
    None,
    42,
    b"bytes",
]


@pytest.mark.parametrize("value", VALID)
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)
    assert check_id(value) == value


@pytest.mark.parametrize("value", INVALID, ids=repr)
def test_invalid_ids(value: object) -> None:
    assert not is_valid_id(value)
    with pytest.raises(InvalidIdError, match="run id"):
        check_id(value, "run id")


@pytest.mark.parametrize("value", ["../x", ".", "..", "a/b", "a" * 129, "é", "/tmp/evil"])
def test_init_refuses_a_bad_id_before_touching_the_disk(value: str) -> None:
    with pytest.raises(InvalidIdError) as caught:
        waddle.init(id=value, system_metrics=False)
    assert isinstance(caught.value, UsageError)
    assert not waddle_dir().exists()


def test_init_refuses_a_bad_id_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WADDLE_RUN_ID", "../escape")
    with pytest.raises(InvalidIdError):
        waddle.init(system_metrics=False)
    assert not waddle_dir().exists()


def test_new_run_ids_are_valid_random_base36() -> None:
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) == 12 and set(i) <= set("0123456789abcdefghijklmnopqrstuvwxyz") for i in ids)
    assert all(is_valid_id(i) for i in ids)


@pytest.mark.parametrize(
    ("run_id", "rank", "stream"), [("abc", 0, "abc"), ("abc", 1, "abc.1"), ("abc", 12, "abc.12")]
)
def test_stream_ids_of_ranks(run_id: str, rank: int, stream: str) -> None:
    assert stream_id(run_id, rank) == stream
    assert run_id_of_stream(stream) == run_id
    assert is_valid_id(stream)


def test_a_rank_that_would_make_an_invalid_stream_id_is_refused_at_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run id of 128 characters + '.3' is not a valid stream id: readers would never list it."""
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(InvalidIdError):
        waddle.init(id="a" * 128, system_metrics=False)
    assert not waddle_dir().exists()

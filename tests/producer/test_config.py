"""Config and Summary: attribute and item access, update, setdefaults, the accepted
sources (dict, argparse.Namespace, dataclass, pydantic model), and the events they write."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import enum
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

import waddle
from tests.helpers import (
    of_type,
    read_events,
)
from waddle.errors import EncodeError, UsageError
from waddle.producer.config import Config, Summary, as_plain_dict


@dataclasses.dataclass
class Optimizer:
    name: str = "adam"
    betas: tuple[float, float] = (0.9, 0.999)


@dataclasses.dataclass
class TrainConfig:
    lr: float = 0.01
    epochs: int = 3
    optimizer: Optimizer = dataclasses.field(default_factory=Optimizer)


class Mode(enum.Enum):
    FAST = "fast"


class ModelConfig(pydantic.BaseModel):
    lr: float = 0.01
    layers: list[int] = [64, 32]
    mode: Mode = Mode.FAST
    out: Path = Path("/tmp/out")


SOURCES = {
    "dict": ({"lr": 0.01, "epochs": 3}, {"lr": 0.01, "epochs": 3}),
    "namespace": (argparse.Namespace(lr=0.01, epochs=3), {"lr": 0.01, "epochs": 3}),
    "dataclass": (
        TrainConfig(),
        {"lr": 0.01, "epochs": 3, "optimizer": {"name": "adam", "betas": (0.9, 0.999)}},
    ),
    "pydantic": (
        ModelConfig(),
        {"lr": 0.01, "layers": [64, 32], "mode": "fast", "out": "/tmp/out"},
    ),
    "none": (None, {}),
}


def config_event_values() -> list[dict[str, Any]]:
    return [event["config"] for event in of_type(read_events(), "config")]


@pytest.mark.parametrize(("source", "expected"), SOURCES.values(), ids=SOURCES)
def test_accepted_sources_become_plain_dicts(source: object, expected: dict) -> None:
    assert as_plain_dict(source) == expected


@pytest.mark.parametrize("source", SOURCES, ids=SOURCES)
def test_init_config_from_each_source_lands_in_the_run_event(source: str) -> None:
    value, expected = SOURCES[source]
    run = waddle.init(config=value, system_metrics=False)
    assert dict(run.config) == expected
    run.finish()
    events = read_events()
    assert events[0]["config"] == json.loads(json.dumps(expected))  # tuples become lists
    assert of_type(events, "config") == []


@pytest.mark.parametrize("source", [42, "lr=0.1", [("lr", 0.1)]])
def test_other_sources_are_refused(source: object) -> None:
    with pytest.raises(UsageError, match="config"):
        as_plain_dict(source)


def test_attribute_and_item_access() -> None:
    config = Config({"lr": 0.1})
    config.batch = 32
    config["depth"] = 4
    assert (config.lr, config["batch"], config.get("depth"), config.get("none", 7)) == (
        0.1,
        32,
        4,
        7,
    )
    assert dict(config) == {"lr": 0.1, "batch": 32, "depth": 4}
    assert list(config) == ["lr", "batch", "depth"]
    assert (len(config), "lr" in config, "nope" in config) == (3, True, False)
    assert list(config.items()) == [("lr", 0.1), ("batch", 32), ("depth", 4)]
    assert list(config.values()) == [0.1, 32, 4]
    assert repr(config) == "Config({'lr': 0.1, 'batch': 32, 'depth': 4})"
    with pytest.raises(AttributeError):
        _ = config.nope
    with pytest.raises(KeyError):
        _ = config["nope"]
    assert not hasattr(config, "nope")


def test_keys_cannot_be_deleted_and_summary_keys_must_be_strings() -> None:
    config = Config({"lr": 0.1})
    with pytest.raises(UsageError):
        del config["lr"]
    summary = Summary()
    with pytest.raises(UsageError, match="strings"):
        summary.update({1: "a"})
    assert dict(config) == {"lr": 0.1} and dict(summary) == {}


def test_update_and_setdefaults() -> None:
    config = Config({"lr": 0.1})
    config.update({"lr": 0.2}, wd=0.01, allow_val_change=True)
    config.update(argparse.Namespace(seed=1))
    config.setdefaults({"lr": 9.0, "warmup": 100})
    assert dict(config) == {"lr": 0.2, "wd": 0.01, "seed": 1, "warmup": 100}


def test_a_config_can_be_copied() -> None:
    config = Config({"lr": 0.1, "layers": [1, 2]})
    shallow = copy.copy(config)
    deep = copy.deepcopy(config)
    assert dict(shallow) == dict(deep) == {"lr": 0.1, "layers": [1, 2]}
    deep["layers"].append(3)
    assert config["layers"] == [1, 2]


def test_each_change_after_init_is_one_config_event() -> None:
    run = waddle.init(config={"lr": 0.1}, system_metrics=False)
    run.config.batch = 32
    run.config["lr"] = 0.2
    run.config.update({"wd": 0.01, "seed": 3})
    run.config.setdefaults({"seed": 4, "warmup": 10})
    run.config.setdefaults({"seed": 5})  # nothing new: no event
    run.config.update({})  # nothing: no event
    run.finish()
    assert config_event_values() == [
        {"batch": 32},
        {"lr": 0.2},
        {"wd": 0.01, "seed": 3},
        {"warmup": 10},
    ]
    assert read_events()[0]["config"] == {"lr": 0.1}


def test_an_unencodable_config_value_raises_at_the_call_and_changes_nothing() -> None:
    run = waddle.init(config={"lr": 0.1}, system_metrics=False)
    with pytest.raises(EncodeError, match="model"):
        run.config.model = object()
    with pytest.raises(EncodeError):
        run.config.update({"ok": 1, "bad": {1, 2}})
    assert dict(run.config) == {"lr": 0.1}
    run.config.ok = 1
    run.finish()
    assert config_event_values() == [{"ok": 1}]


def test_summary_merges_explicit_values_over_logged_ones() -> None:
    summary = Summary()
    summary.last.update({"loss": 2.0, "acc": 0.5})
    summary["loss"] = 0.1
    summary.last.update({"loss": 3.0})
    assert dict(summary) == {"loss": 0.1, "acc": 0.5}
    assert (summary.loss, summary["acc"], len(summary)) == (0.1, 0.5, 2)

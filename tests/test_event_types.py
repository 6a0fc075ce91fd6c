"""The TypedDicts of ``waddle.event_types`` say what the pydantic models say.

mypy checks code against the TypedDicts; ``/ingest`` and the JSON Schemas use the
models. A field added to one and not the other would let typed code read a key that no
valid event has (or miss one that every event has).
"""

from __future__ import annotations

import typing

import pytest

from waddle import event_types
from waddle.events import MODELS

TYPED = {
    typing.get_type_hints(td)["type"].__args__[0]: td for td in typing.get_args(event_types.Event)
}


def test_every_event_type_has_one_typed_dict() -> None:
    assert set(TYPED) == set(MODELS)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_keys_and_which_are_required_match_the_model(kind: str) -> None:
    model, typed = MODELS[kind], TYPED[kind]
    fields = model.model_fields
    assert set(typed.__required_keys__) | set(typed.__optional_keys__) == set(fields)
    assert set(typed.__required_keys__) == {
        name for name, info in fields.items() if info.is_required()
    }

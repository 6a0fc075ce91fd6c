"""The id rule and the version are written once; everything else derives from them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

import waddle
from waddle import ids

REPO = Path(__file__).resolve().parents[2]


def test_the_version_lives_in_waddle_only() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "waddle.__version__"}
    assert importlib.metadata.version("waddleml") == waddle.__version__


def test_the_models_and_the_api_description_use_the_one_id_rule() -> None:
    from waddle.events import RunEvent
    from waddle.web.openapi import _ID

    assert RunEvent.model_json_schema()["properties"]["run_id"]["pattern"] == ids.ID_REGEX
    assert _ID["pattern"] == ids.ID_REGEX

"""Friendly default run names (``brisk-heron-42``), derived from the run id."""

from __future__ import annotations

import hashlib

_ADJECTIVES = (
    "amber",
    "bold",
    "brisk",
    "calm",
    "clever",
    "crisp",
    "dapper",
    "eager",
    "fuzzy",
    "gentle",
    "glad",
    "hardy",
    "jolly",
    "keen",
    "lively",
    "lucky",
    "mellow",
    "nimble",
    "plucky",
    "proud",
    "quiet",
    "rapid",
    "sage",
    "shiny",
    "snowy",
    "spry",
    "steady",
    "sunny",
    "swift",
    "tidy",
    "vivid",
    "witty",
)
_ANIMALS = (
    "auk",
    "bittern",
    "coot",
    "crane",
    "curlew",
    "dipper",
    "duck",
    "eider",
    "egret",
    "gannet",
    "goose",
    "grebe",
    "heron",
    "ibis",
    "kittiwake",
    "loon",
    "mallard",
    "merganser",
    "murre",
    "pelican",
    "penguin",
    "petrel",
    "plover",
    "puffin",
    "razorbill",
    "scaup",
    "shag",
    "smew",
    "stork",
    "swan",
    "teal",
    "wigeon",
)


def friendly_name(run_id: str) -> str:
    """A readable name that is the same every time for the same run id."""
    digest = hashlib.sha256(run_id.encode()).digest()
    return f"{_ADJECTIVES[digest[0] % 32]}-{_ANIMALS[digest[1] % 32]}-{digest[2] % 100}"

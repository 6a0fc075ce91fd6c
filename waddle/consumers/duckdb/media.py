"""Typed values and artifact events into rows of the media tables. Pure: no database.

A typed value (docs/media.md) found in ``metrics.data`` becomes a row of ``media``
(image, audio, video, table; a list of images is one row per item, ``idx`` its
position) or of ``histograms``; ``artifact_version`` and ``artifact_use`` events become
rows of ``artifact_versions`` and ``artifact_uses`` (docs/schema.md). Each value is
checked here: a malformed one raises ``ValueError``, which the writer turns into a
quarantined event (``waddle.consumers.quarantine``), never a crash.
"""

from __future__ import annotations

import math
import re
from typing import Any

from waddle.consumers.duckdb.columns import to_json

MEDIA = (
    "run_id",
    "rank",
    "key",
    "step",
    "idx",
    "kind",
    "sha256",
    "size",
    "format",
    "width",
    "height",
    "caption",
    "meta",
    "ts",
)
HISTOGRAMS = ("run_id", "rank", "key", "step", "bins", "counts", "ts")
ARTIFACT_VERSIONS = (
    "name",
    "type",
    "version",
    "digest",
    "manifest",
    "size",
    "files",
    "aliases",
    "metadata",
    "run_id",
    "ts",
)
ARTIFACT_USES = ("name", "version", "digest", "alias", "run_id", "ts")
# The inserts that turn the JSON text of list columns into DuckDB lists.
MEDIA_SELECT = "SELECT * FROM batch"
HISTOGRAMS_SELECT = (
    "SELECT run_id, rank, key, step, from_json(bins, '[\"DOUBLE\"]'), "
    "from_json(counts, '[\"BIGINT\"]'), ts FROM batch"
)
ARTIFACT_VERSIONS_SELECT = (
    "SELECT name, type, version, digest, manifest, size, files, "
    "from_json(aliases, '[\"VARCHAR\"]'), metadata, run_id, ts FROM batch"
)
ARTIFACT_USES_SELECT = "SELECT * FROM batch"

SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMON = frozenset(("_type", "sha256", "size", "format", "width", "height", "caption"))
_INT64_MAX = 2**63 - 1


def _fail(what: str, value: Any) -> ValueError:
    return ValueError(f"malformed {what}: {str(value)[:200]}")


def sha256_of(value: Any, what: str) -> str:
    """The value as a sha256 hex digest (64 lowercase hex digits), or ValueError."""
    if type(value) is not str or SHA256.fullmatch(value) is None:
        raise _fail(f"{what} sha256", value)
    return value


def _count(value: Any, what: str, *, optional: bool = False) -> int | None:
    """A non-negative int that fits a BIGINT (None allowed when ``optional``)."""
    if value is None and optional:
        return None
    if type(value) is not int or not 0 <= value <= _INT64_MAX:
        raise _fail(what, value)
    return value


def _text(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if type(value) is not str:
        raise _fail(what, value)
    return value


def media_rows(
    run_id: str, rank: int, key: str, step: int, ts: float, value: Any
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The ``media`` and ``histograms`` rows of one typed value (or list of them)."""
    items = value if type(value) is list else [value]
    media: list[tuple[Any, ...]] = []
    histograms: list[tuple[Any, ...]] = []
    for idx, item in enumerate(items):
        kind = item["_type"]
        if kind == "histogram":
            if type(value) is list:
                raise _fail("histogram (not allowed in a list)", item)
            bins, counts = item.get("bins"), item.get("counts")
            if (
                type(bins) is not list
                or type(counts) is not list
                or len(bins) != len(counts) + 1
                or not all(type(b) in (int, float) and math.isfinite(b) for b in bins)
                or not all(type(c) is int and 0 <= c <= _INT64_MAX for c in counts)
            ):
                raise _fail("histogram", item)
            histograms.append((run_id, rank, key, step, to_json(bins), to_json(counts), ts))
            continue
        meta = {name: cell for name, cell in item.items() if name not in _COMMON}
        media.append(
            (
                run_id,
                rank,
                key,
                step,
                idx,
                kind,
                sha256_of(item.get("sha256"), kind),
                _count(item.get("size"), f"{kind} size"),
                _text(item.get("format"), f"{kind} format"),
                _count(item.get("width"), f"{kind} width", optional=True),
                _count(item.get("height"), f"{kind} height", optional=True),
                _text(item.get("caption"), f"{kind} caption", optional=True),
                to_json(meta),
                ts,
            )
        )
    return media, histograms


def artifact_version_row(run_id: str, event: dict[str, Any]) -> tuple[Any, ...]:
    """An ``artifact_versions`` row from an ``artifact_version`` event."""
    aliases = event.get("aliases", [])
    if type(aliases) is not list or not all(type(alias) is str for alias in aliases):
        raise _fail("artifact_version aliases", aliases)
    metadata = event.get("metadata", {})
    if type(metadata) is not dict:
        raise _fail("artifact_version metadata", metadata)
    return (
        _text(event.get("name"), "artifact_version name"),
        _text(event.get("artifact_type"), "artifact_version artifact_type"),
        _count(event.get("version"), "artifact_version version"),
        sha256_of(event.get("digest"), "artifact_version digest"),
        sha256_of(event.get("manifest"), "artifact_version manifest"),
        _count(event.get("size"), "artifact_version size"),
        _count(event.get("files"), "artifact_version files"),
        to_json(aliases),
        to_json(metadata),
        run_id,
        event["ts"],
    )


def artifact_use_row(run_id: str, event: dict[str, Any]) -> tuple[Any, ...]:
    """An ``artifact_uses`` row from an ``artifact_use`` event."""
    return (
        _text(event.get("name"), "artifact_use name"),
        _count(event.get("version"), "artifact_use version"),
        sha256_of(event.get("digest"), "artifact_use digest"),
        _text(event.get("alias"), "artifact_use alias", optional=True),
        run_id,
        event["ts"],
    )

"""Event models (pydantic): the full schema of every event type, used at boundaries.

These models are the one source of the JSON Schema files in ``schemas/``
(``python -m waddle.events schemas/`` writes them; a test fails when they drift) and
validate what arrives over ``/ingest``. The log reader checks only the fields every
reader relies on (``waddle.eventlog.record.REQUIRED_FIELDS``), which keeps the tail loop
fast; a test keeps those two in agreement. pydantic is imported here and only here, so
the producer path does not pay for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from waddle.ids import ID_REGEX
from waddle.limits import INT64_MAX, INT64_MIN, INT_RANGES, MAX_DEPTH, SEQ_RANGE

# A logged value: a number, one of the names of the non-finite floats, or any JSON value.
LoggedValues = dict[str, Any]
# Integers are bounded by the columns that store them (waddle.limits.INT_RANGES;
# a test holds the two together).
NonNegativeInt = Annotated[int, Field(ge=0, le=INT64_MAX, strict=True)]
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, strict=True)]
Rank = Annotated[
    int, Field(ge=INT_RANGES["run"]["rank"][0], le=INT_RANGES["run"]["rank"][1], strict=True)
]


Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Envelope(BaseModel):
    """Fields every event has."""

    model_config = ConfigDict(extra="allow", strict=True)

    seq: Annotated[int, Field(ge=SEQ_RANGE[0], le=SEQ_RANGE[1], strict=True)] = Field(
        description="Position in the stream: 0, 1, 2, ... without gaps."
    )
    ts: float = Field(description="Unix time in seconds when the event was made.")


class RunEvent(Envelope):
    """The first event of a stream (again, with resumed=true, when a run is resumed)."""

    type: Literal["run"]
    run_id: str = Field(pattern=ID_REGEX)
    project: str
    name: str
    config: dict[str, Any]
    tags: list[str]
    notes: str | None
    group: str | None
    job_type: str | None
    context: dict[str, Any] = Field(
        description="Start time, argv, Python, OS, CPU, memory, host, GPUs, git, code."
    )
    rank: Rank = 0
    resumed: bool = False


class ConfigEvent(Envelope):
    """A partial update of the run's config."""

    type: Literal["config"]
    config: dict[str, Any]


class MetricsEvent(Envelope):
    """One ``log()`` call: the values at a step. NaN/Inf are the strings NaN/Infinity."""

    type: Literal["metrics"]
    step: NonNegativeInt
    data: LoggedValues


class SummaryEvent(Envelope):
    """A partial update of the run's summary."""

    type: Literal["summary"]
    summary: LoggedValues
    final: bool = Field(
        default=False, description="True on the whole merged summary written at finish."
    )


class SystemEvent(Envelope):
    """A sample of system metrics, flat keys such as ``cpu/percent``, ``gpu/0/util_percent``."""

    type: Literal["system"]
    data: LoggedValues


class ConsoleEvent(Envelope):
    """Captured console text."""

    type: Literal["console"]
    stream: Literal["stdout", "stderr"]
    text: str


class ArtifactEvent(Envelope):
    """A file recorded with the run."""

    type: Literal["artifact"]
    name: str
    kind: str
    path: str
    size: NonNegativeInt
    sha256: Sha256


class ArtifactVersionEvent(Envelope):
    """``log_artifact``: a version of a named artifact, by its manifest (a blob).

    ``digest`` hashes the content (files, references, type), so the same content is the
    same ``version``; ``manifest`` is the blob listing the files (docs/media.md).
    """

    type: Literal["artifact_version"]
    name: str
    artifact_type: str = Field(description="The artifact's type (``model``, ``dataset``...).")
    version: NonNegativeInt
    digest: Sha256
    manifest: Sha256
    size: NonNegativeInt = Field(description="Total bytes of the version's files.")
    files: NonNegativeInt = Field(description="How many files the version holds.")
    aliases: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ArtifactUseEvent(Envelope):
    """``use_artifact``: the run read a version of an artifact (lineage)."""

    type: Literal["artifact_use"]
    name: str
    version: NonNegativeInt
    digest: Sha256
    alias: str | None


class DefineMetricEvent(Envelope):
    """``define_metric``: how a metric (or a glob of metrics, such as ``eval/*``) is shown.

    ``step_metric`` is the metric to draw it against, ``summary`` what the run's summary
    keeps for it; a later definition of the same ``metric`` replaces an earlier one.
    """

    type: Literal["define_metric"]
    metric: str
    step_metric: str | None
    summary: Literal["min", "max", "mean", "last", "none"] | None
    hidden: bool
    goal: Literal["minimize", "maximize"] | None


class FinishEvent(Envelope):
    """The end of a process's part of a run."""

    type: Literal["finish"]
    exit_code: Int64 | None
    status: Literal["finished", "failed", "killed"]
    dropped: dict[str, NonNegativeInt] = Field(
        default_factory=dict, description="Events lost to I/O trouble, by cause."
    )


class SkippedEvent(Envelope):
    """A placeholder a relay sends for a seq its local log lost (a corrupt line skipped).

    The host takes a stream only without gaps; this keeps the seq taken and the loss
    visible at the host (its DuckDB writer quarantines it). Producers never write it.
    """

    type: Literal["skipped"]
    reason: str = Field(description="Why the relay had no event for this seq.")


MODELS: dict[str, type[Envelope]] = {
    "run": RunEvent,
    "config": ConfigEvent,
    "metrics": MetricsEvent,
    "summary": SummaryEvent,
    "system": SystemEvent,
    "console": ConsoleEvent,
    "artifact": ArtifactEvent,
    "artifact_version": ArtifactVersionEvent,
    "artifact_use": ArtifactUseEvent,
    "define_metric": DefineMetricEvent,
    "finish": FinishEvent,
    "skipped": SkippedEvent,
}
Event = Annotated[
    RunEvent
    | ConfigEvent
    | MetricsEvent
    | SummaryEvent
    | SystemEvent
    | ConsoleEvent
    | ArtifactEvent
    | ArtifactVersionEvent
    | ArtifactUseEvent
    | DefineMetricEvent
    | FinishEvent
    | SkippedEvent,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def schema_files() -> dict[str, bytes]:
    """File name to JSON Schema text: one file per event type and one for any event."""
    files = {f"{kind}.schema.json": _dump(m.model_json_schema()) for kind, m in MODELS.items()}
    files["event.schema.json"] = _dump(EVENT_ADAPTER.json_schema())
    return files


# JSON Schema has no keyword for depth; the limit is stated beside it.
DEPTH_COMMENT = (
    f"A line nests objects and arrays at most {MAX_DEPTH} levels deep (the event object is "
    "the first level); readers skip and report a deeper line."
)


def _dump(schema: dict[str, Any]) -> bytes:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": DEPTH_COMMENT,
        **schema,
    }
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(folder: Path) -> list[Path]:
    """Regenerate ``schemas/``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_files().items():
        path = folder / name
        path.write_bytes(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1] if len(sys.argv) > 1 else "schemas")):
        print(path)

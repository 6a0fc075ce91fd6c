"""The events as code passes them between modules: TypedDicts, free at run time.

An event is a plain ``dict`` everywhere (the hot path decodes lines with orjson and
never builds objects); these types say which keys each ``type`` of event has, so that
mypy checks the code that reads them. The pydantic models in ``waddle.events`` validate
events at the boundary (``/ingest``, the JSON Schemas); these mirror them key for key,
required and optional alike (tests/test_event_types.py holds the two together). Fields a
model lists with a default are ``NotRequired`` here: an event may leave them out.

``Event`` is the union, narrowed by ``event["type"] == "metrics"`` and the like. Code that
only moves events (the reader, the relay, ``/ingest``) reads the envelope (``seq``,
``ts``, ``type``), which every member has.
"""

import sys
from typing import Any, Literal, TypedDict

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:
    from typing_extensions import NotRequired

# A logged value: a number, one of the names of the non-finite floats, or any JSON value.
LoggedValues = dict[str, Any]


class RunEvent(TypedDict):
    """The first event of a stream (again, with resumed=true, when a run is resumed)."""

    seq: int
    ts: float
    type: Literal["run"]
    run_id: str
    project: str
    name: str
    config: dict[str, Any]
    tags: list[str]
    notes: str | None
    group: str | None
    job_type: str | None
    context: dict[str, Any]
    rank: NotRequired[int]
    resumed: NotRequired[bool]


class ConfigEvent(TypedDict):
    """A partial update of the run's config."""

    seq: int
    ts: float
    type: Literal["config"]
    config: dict[str, Any]


class MetricsEvent(TypedDict):
    """One ``log()`` call: the values at a step."""

    seq: int
    ts: float
    type: Literal["metrics"]
    step: int
    data: LoggedValues


class SummaryEvent(TypedDict):
    """A partial update of the run's summary (the whole of it, ``final``, at finish)."""

    seq: int
    ts: float
    type: Literal["summary"]
    summary: LoggedValues
    final: NotRequired[bool]


class SystemEvent(TypedDict):
    """A sample of system metrics, flat keys such as ``cpu/percent``."""

    seq: int
    ts: float
    type: Literal["system"]
    data: LoggedValues


class ConsoleEvent(TypedDict):
    """Captured console text."""

    seq: int
    ts: float
    type: Literal["console"]
    stream: Literal["stdout", "stderr"]
    text: str


class ArtifactEvent(TypedDict):
    """A file recorded with the run."""

    seq: int
    ts: float
    type: Literal["artifact"]
    name: str
    kind: str
    path: str
    size: int
    sha256: str


class ArtifactVersionEvent(TypedDict):
    """A version of a named artifact, by its manifest blob (``log_artifact``)."""

    seq: int
    ts: float
    type: Literal["artifact_version"]
    name: str
    artifact_type: str
    version: int
    digest: str
    manifest: str
    size: int
    files: int
    aliases: NotRequired[list[str]]
    metadata: NotRequired[dict[str, Any]]


class ArtifactUseEvent(TypedDict):
    """A run read a version of an artifact (``use_artifact``: lineage)."""

    seq: int
    ts: float
    type: Literal["artifact_use"]
    name: str
    version: int
    digest: str
    alias: str | None


class DefineMetricEvent(TypedDict):
    """How a metric (or a glob of metrics) is shown; a later one replaces an earlier one."""

    seq: int
    ts: float
    type: Literal["define_metric"]
    metric: str
    step_metric: str | None
    summary: Literal["min", "max", "mean", "last", "none"] | None
    hidden: bool
    goal: Literal["minimize", "maximize"] | None


class FinishEvent(TypedDict):
    """The end of a process's part of a run."""

    seq: int
    ts: float
    type: Literal["finish"]
    exit_code: int | None
    status: Literal["finished", "failed", "killed"]
    dropped: NotRequired[dict[str, int]]


class SkippedEvent(TypedDict):
    """A relay's placeholder for a seq its local log lost; never written by a producer."""

    seq: int
    ts: float
    type: Literal["skipped"]
    reason: str


Event = (
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
    | SkippedEvent
)

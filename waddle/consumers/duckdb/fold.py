"""The state of runs and streams as their events leave it. Pure: no database.

Rules (docs/schema.md states them for users):

* A stream belongs to the run named by its ``run`` event's ``run_id`` and has that
  event's ``rank`` (0 when absent). Each stream keeps its own config and summary: its
  latest ``run`` event's config updated by its ``config`` events, and its ``summary``
  events merged key by key, as the producer does.
* A run follows its *lead* stream, the lowest rank seen (the main process): identity
  (project, name, tags, notes, group, job type, context), config, summary and status
  are the lead's. A ``run`` event makes it ``running`` again (a resumed stream); a
  ``finish`` event sets status, exit code and ``finished_at``.
* ``define_metric`` events of the lead set ``metric_defs`` ({metric: {step_metric, summary,
  hidden, goal}}); a later definition of the same metric (name or glob) replaces it.
* ``started_at`` is the earliest start of a non-resumed ``run`` event; ``last_step`` the
  highest step logged by any rank; ``updated_at`` the latest event time.

Every rule is a min, a max or a fold in seq order within one stream, so the outcome does
not depend on how streams interleave (which is what a restart changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RUNNING = "running"


@dataclass
class StreamRow:
    """One row of ``streams``."""

    stream: str
    run_id: str
    rank: int = 0
    status: str = RUNNING
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    dropped: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    # The row as ``inserts.stream_values`` makes it, kept until ``apply`` changes it: a
    # host commits its live streams' rows every round, most of them unchanged.
    values: list[Any] | None = field(default=None, repr=False, compare=False)


@dataclass
class RunRow:
    """One row of ``runs``, and the rank whose events set its identity and status."""

    run_id: str
    project: str | None = None
    name: str | None = None
    status: str = RUNNING
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: str | None = None
    group_name: str | None = None
    job_type: str | None = None
    last_step: int | None = None
    updated_at: float | None = None
    metric_defs: dict[str, Any] = field(default_factory=dict)
    lead_rank: int | None = None
    # The JSON columns as ``inserts.run_values`` spells them, kept until ``apply``
    # changes them: a host commits its live runs' rows every round, only their step and
    # time changed (``seen``).
    json: list[str] | None = field(default=None, repr=False, compare=False)


def start_time(event: dict[str, Any]) -> float:
    """When the process behind a ``run`` event started (its context), else the event time."""
    started = event["context"].get("started_at")
    return float(started) if type(started) in (int, float) else float(event["ts"])


def _leads(run: RunRow, stream: StreamRow) -> bool:
    """Whether ``stream`` is (now) the lead of ``run``; a lower rank takes the lead."""
    if run.lead_rank is None or stream.rank < run.lead_rank:
        run.lead_rank = stream.rank
        run.summary = dict(stream.summary)
    return stream.rank == run.lead_rank


def apply_run(run: RunRow, stream: StreamRow, event: dict[str, Any]) -> None:
    """A ``run`` event: the stream (and, from the lead, the run) is running again."""
    started = start_time(event)
    stream.status, stream.finished_at, stream.exit_code = RUNNING, None, None
    stream.config = dict(event["config"])
    if stream.started_at is None:
        stream.started_at = started
    if run.started_at is None or (not event.get("resumed") and started < run.started_at):
        run.started_at = started
    if _leads(run, stream):
        run.project, run.name = event["project"], event["name"]
        run.config = dict(stream.config)
        run.context = event["context"]
        run.tags = [str(tag) for tag in event["tags"]]
        run.notes, run.group_name, run.job_type = event["notes"], event["group"], event["job_type"]
        run.status, run.finished_at, run.exit_code = RUNNING, None, None


def apply_finish(run: RunRow, stream: StreamRow, event: dict[str, Any]) -> None:
    """A ``finish`` event ends the stream, and the run when it comes from the lead."""
    dropped = event.get("dropped")
    stream.status, stream.exit_code = event["status"], event["exit_code"]
    stream.finished_at = event["ts"]
    stream.dropped = dropped if type(dropped) is dict else {}
    if _leads(run, stream):
        run.status, run.exit_code, run.finished_at = stream.status, stream.exit_code, event["ts"]


def apply(run: RunRow, stream: StreamRow, event: dict[str, Any]) -> None:
    """Fold one event other than ``metrics`` and ``system`` into its run and stream."""
    run.json = stream.values = None  # what they cache may change here
    kind = event["type"]
    if kind == "run":
        apply_run(run, stream, event)
    elif kind == "finish":
        apply_finish(run, stream, event)
    elif kind == "config":
        stream.config.update(event["config"])
        if _leads(run, stream):
            run.config.update(event["config"])
    elif kind == "summary":
        stream.summary.update(event["summary"])
        if _leads(run, stream):
            run.summary.update(event["summary"])
    elif kind == "define_metric" and _leads(run, stream):
        run.metric_defs = {**run.metric_defs, event["metric"]: metric_def(event)}
    seen(run, event["ts"])


DEFINE_FIELDS = ("step_metric", "summary", "hidden", "goal")


def metric_def(event: dict[str, Any]) -> dict[str, Any]:
    """What a ``define_metric`` event says of its metric, absent fields as null."""
    return {name: event.get(name) for name in DEFINE_FIELDS}


def seen(run: RunRow, ts: float, step: int | None = None) -> None:
    """Move ``updated_at`` and ``last_step`` forward."""
    if run.updated_at is None or ts > run.updated_at:
        run.updated_at = ts
    if step is not None and (run.last_step is None or step > run.last_step):
        run.last_step = step

"""``define_metric``: what a definition may say, which metrics it names, and the step
metric it adds to a ``log()`` (``step_sync``).

A definition names a metric or a glob of them (``"eval/*"``; ``*`` is any text). Misuse
raises at the call; the definition is then recorded as a ``define_metric`` event.
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from waddle.errors import UsageError
from waddle.eventlog.record import METRIC_GOALS, METRIC_SUMMARIES


def matches(pattern: str, key: str) -> bool:
    """Whether a metric name matches a ``define_metric`` name (``*`` is any text)."""
    return pattern == key or ("*" in pattern and fnmatchcase(key, pattern))


def check_metric_definition(
    name: object, step_metric: object, summary: object, goal: object, hidden: object
) -> dict[str, Any]:
    """The fields of a ``define_metric`` event; misuse raises here, at the call."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"define_metric() takes a metric name or glob, got {name!r}")
    if step_metric is not None and not isinstance(step_metric, str):
        raise UsageError(f"step_metric must be a metric name, got {step_metric!r}")
    if summary is not None and summary not in METRIC_SUMMARIES:
        raise UsageError(f"summary must be one of {', '.join(METRIC_SUMMARIES)}, got {summary!r}")
    if goal is not None and goal not in METRIC_GOALS:
        raise UsageError(f"goal must be one of {', '.join(METRIC_GOALS)}, got {goal!r}")
    return {
        "metric": name,
        "step_metric": step_metric,
        "summary": summary,
        "hidden": bool(hidden),
        "goal": goal,
    }


def with_step_metrics(
    synced: Mapping[str, str], last: Mapping[str, Any], data: dict[str, Any]
) -> dict[str, Any]:
    """``data`` plus the ``last`` value of each step metric that ``synced`` (metric or glob
    -> its step metric) asks for and ``data`` lacks; ``data`` itself when none is added."""
    added = {}
    for pattern, step_metric in synced.items():
        if step_metric in data or step_metric in added or step_metric not in last:
            continue
        if any(key != step_metric and matches(pattern, key) for key in data):
            added[step_metric] = last[step_metric]
    return {**data, **added} if added else data

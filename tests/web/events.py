"""Valid events built by hand, as a relay would send them."""

from __future__ import annotations

import time
from typing import Any


def run_event(run_id: str, seq: int = 0, project: str = "relayed", **extra: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": time.time(),
        "type": "run",
        "run_id": run_id,
        "project": project,
        "name": f"name-{run_id}",
        "config": {"lr": 0.1},
        "tags": ["t"],
        "notes": None,
        "group": None,
        "job_type": None,
        "context": {"host": "elsewhere"},
        **extra,
    }


def metrics_event(seq: int, step: int | None = None, **data: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "ts": time.time(),
        "type": "metrics",
        "step": seq if step is None else step,
        "data": data or {"loss": 1.0 / (seq + 1)},
    }


def finish_event(seq: int, status: str = "finished") -> dict[str, Any]:
    return {"seq": seq, "ts": time.time(), "type": "finish", "exit_code": 0, "status": status}


def stream_events(run_id: str, metrics: int, *, finish: bool = True) -> list[dict[str, Any]]:
    """A whole stream: run, ``metrics`` metrics events and (if asked) finish."""
    events = [run_event(run_id)] + [metrics_event(seq) for seq in range(1, metrics + 1)]
    if finish:
        events.append(finish_event(metrics + 1))
    return events

"""The folding rules of runs and streams, and their independence from interleaving."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.consumers.logs import run_fields
from waddle.consumers.duckdb import fold


def stream_events(rank: int, *, resumed: bool = False, seq: int = 0) -> list[dict[str, Any]]:
    def ev(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        seq += 1
        return {"seq": seq, "ts": 10.0 * rank + seq, "type": kind, **fields}

    fields = run_fields("r", rank=rank, project=f"p{rank}", resumed=resumed, started_at=rank)
    return [
        ev("run", **fields),
        ev("config", config={"rank": rank, f"only{rank}": True}),
        ev("summary", summary={"loss": rank, f"s{rank}": 1}),
        ev("finish", exit_code=rank, status="finished" if rank == 0 else "failed", dropped={}),
    ]


def replay(order: list[tuple[int, dict[str, Any]]]) -> fold.RunRow:
    run = fold.RunRow("r")
    streams = {rank: fold.StreamRow(f"r.{rank}", "r", rank) for rank, _ in order}
    for rank, event in order:
        fold.apply(run, streams[rank], event)
    return run


def test_the_lead_rank_sets_identity_config_summary_and_status() -> None:
    order = [(1, e) for e in stream_events(1)] + [(0, e) for e in stream_events(0)]
    run = replay(order)
    assert (run.project, run.status, run.exit_code, run.lead_rank) == ("p0", "finished", 0, 0)
    assert run.config == {"lr": 0.1, "rank": 0, "only0": True}
    assert run.summary == {"loss": 0, "s0": 1}
    assert run.started_at == 0.0


def test_a_run_event_after_finish_means_running_again() -> None:
    run = fold.RunRow("r")
    stream = fold.StreamRow("r", "r")
    for event in stream_events(0):
        fold.apply(run, stream, event)
    assert run.status == "finished"
    fold.apply(run, stream, stream_events(0, resumed=True, seq=10)[0])
    assert (run.status, run.finished_at, run.exit_code) == ("running", None, None)
    assert stream.status == "running" and run.summary == {"loss": 0, "s0": 1}


@given(st.randoms(use_true_random=False), st.integers(1, 3))
def test_the_outcome_does_not_depend_on_interleaving(rng: random.Random, ranks: int) -> None:
    per_stream = {rank: stream_events(rank) for rank in range(ranks)}
    reference = replay([(r, e) for r in sorted(per_stream) for e in per_stream[r]])
    cursors = {rank: 0 for rank in per_stream}
    order = []
    while cursors:
        rank = rng.choice(sorted(cursors))
        order.append((rank, per_stream[rank][cursors[rank]]))
        cursors[rank] += 1
        if cursors[rank] == len(per_stream[rank]):
            del cursors[rank]
    assert replay(order) == reference

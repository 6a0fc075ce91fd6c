"""The Parquet lake: one metric across 1,000 finished runs, lake against the DuckDB store.

1,000 runs (``--steps`` steps of 4 metrics each, through the real log writer) are
folded by the DuckDB writer into a store and exported by the lake consumer
(``waddle-consume --consumer lake``, in-process) into a lake: the export rate is printed.
Then, side by side in interleaved rounds, each query in a fresh DuckDB connection (what
a new process or a ``waddle serve`` request after a restart pays):

* store: ``SELECT run_id, min(value) FROM metrics WHERE key = 'loss' GROUP BY run_id``
  on the DuckDB file;
* lake: the same over ``read_parquet('lake/metrics/*/*/*.parquet', hive_partitioning)``;
* lake, one run: one run's ``loss`` series from the lake (partition pruning on run_id);
* serve view: the first query through ``waddle serve --lake``'s views (an empty store
  plus the lake), on a new cursor of one open connection, as a server request runs it.

    python benchmarks/bench_lake.py                       # 1,000 runs x 100 steps
    python benchmarks/bench_lake.py --runs 200 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from waddle.consumers.base import run_consumer  # noqa: E402
from waddle.consumers.duckdb.writer import DuckDBWriter  # noqa: E402
from waddle.consumers.lake.consumer import LakeConsumer  # noqa: E402
from waddle.eventlog.writer import StreamWriter  # noqa: E402
from waddle.store import schema as store  # noqa: E402
from waddle.store.lake import LakeViews, scan  # noqa: E402

ACROSS = "SELECT run_id, min(value) FROM {metrics} WHERE key = 'loss' GROUP BY run_id"
ONE_RUN = "SELECT step, value FROM {metrics} WHERE run_id = 'run00500' AND key = 'loss'"


def write_runs(root: Path, runs: int, steps: int) -> None:
    """``runs`` finished runs of ``steps`` steps of 4 metrics, as a producer writes them."""
    for index in range(runs):
        run_id = f"run{index:05d}"
        writer = StreamWriter(root / "log" / run_id)
        try:
            writer.append(
                "run",
                {
                    "run_id": run_id,
                    "project": f"project{index % 10}",
                    "name": run_id,
                    "config": {"lr": 0.001 * (index % 7), "seed": index},
                    "tags": [],
                    "notes": None,
                    "group": None,
                    "job_type": None,
                    "context": {"started_at": time.time()},
                },
            )
            for step in range(steps):
                data = {"loss": 1 / (step + 1 + index), "acc": step / steps, "lr": 0.1, "x": 1}
                writer.append("metrics", {"step": step, "data": data})
            writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
        finally:
            writer.close()


def consume(root: Path, consumer: Any) -> float:
    started = time.perf_counter()
    run_consumer(consumer, root, threading.Event(), once=True)
    return time.perf_counter() - started


def fresh(path: Path | None, sql: str) -> Callable[[], int]:
    def query() -> int:
        with duckdb.connect(str(path) if path else ":memory:", read_only=bool(path)) as con:
            return len(con.execute(sql).fetchall())

    return query


def through_views(db: Path, lake: Path) -> Callable[[], int]:
    """The query as ``waddle serve --lake`` runs it: a new cursor of the server's one
    connection, whose views were built at its first request."""
    con = store.connect(db)
    views = LakeViews(lake)
    views.prepare(con.cursor()).close()

    def query() -> int:
        with views.prepare(con.cursor()) as cursor:
            return len(cursor.execute(ACROSS.format(metrics="metrics")).fetchall())

    return query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=10, help="interleaved rounds")
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "bench_lake.json", help="JSON figures"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        root, lake, empty = Path(tmp) / "w", Path(tmp) / "lake", Path(tmp) / "empty.duckdb"
        write_runs(root, args.runs, args.steps)
        db = root / "waddle.duckdb"
        fold_s = consume(root, DuckDBWriter(root, db, snapshot_interval=0))
        export_s = consume(root, LakeConsumer(root, lake))
        store.connect(empty).close()
        queries = {
            "store": fresh(db, ACROSS.format(metrics="metrics")),
            "lake": fresh(None, ACROSS.format(metrics=scan(lake, "metrics"))),
            "lake, one run": fresh(None, ONE_RUN.format(metrics=scan(lake, "metrics"))),
            "serve view": through_views(empty, lake),
        }
        rows = {name: query() for name, query in queries.items()}  # warm the page cache
        assert rows["store"] == rows["lake"] == rows["serve view"] == args.runs, rows
        times: dict[str, list[float]] = {name: [] for name in queries}
        for _ in range(args.repeat):
            for name, query in queries.items():
                started = time.perf_counter()
                query()
                times[name].append(time.perf_counter() - started)
        files = sum(1 for _ in lake.rglob("*.parquet"))
    report(args, fold_s, export_s, files, times)


def report(
    args: argparse.Namespace,
    fold_s: float,
    export_s: float,
    files: int,
    times: dict[str, list[float]],
) -> None:
    store_ms = statistics.median(times["store"]) * 1000
    print(f"\n{args.runs} runs x {args.steps} steps x 4 metrics; {files} lake files\n")
    print(f"- DuckDB writer fold (scratch store): {fold_s:.1f} s")
    print(f"- lake consumer (fold + export): {export_s:.1f} s, {args.runs / export_s:.0f} runs/s\n")
    print("| query (fresh connection) | median ms | min ms | max ms | vs store |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        median = statistics.median(ms)
        ratio = median / store_ms
        print(f"| {name} | {median:.1f} | {min(ms):.1f} | {max(ms):.1f} | {ratio:.1f}x |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figures = {"runs": args.runs, "steps": args.steps, "files": files, "fold_s": fold_s}
    figures |= {"export_s": export_s, "times_s": times}
    args.output.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

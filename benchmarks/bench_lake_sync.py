"""The lake export's sync, side by side: an fsync of each staged file and changed folder
(16 at a time, what the export does) against one ``os.sync`` per step (what it did: it
cannot report a failed write, and flushes every disk of the host).

One batch of ``--runs`` finished runs (256, the consumer's batch) is folded once by the
lake consumer, then exported again and again from its scratch database, the two ways in
interleaved rounds; each export writes, syncs and renames every file of the batch.

    python benchmarks/bench_lake_sync.py                 # 256 runs, 5 rounds, ~1 minute
    python benchmarks/bench_lake_sync.py --runs 64 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.bench_lake import write_runs  # noqa: E402
from waddle.consumers.base import run_consumer  # noqa: E402
from waddle.consumers.lake import export  # noqa: E402
from waddle.consumers.lake.consumer import PENDING, LakeConsumer  # noqa: E402


def os_sync(paths: Iterable[Path]) -> None:
    """The sync the export used before: one ``os.sync`` per step."""
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    args = parser.parse_args()
    ways = {"fsync each (now)": export.sync, "os.sync (before)": os_sync}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(prefix="bench-lake-sync-") as tmp:
        root, lake = Path(tmp) / "w", Path(tmp) / "lake"
        write_runs(root, args.runs, args.steps)
        consumer = LakeConsumer(root, lake)
        run_consumer(consumer, root, threading.Event(), once=True)
        with duckdb.connect(str(root / f"{consumer.name}.duckdb")) as con:
            runs = con.execute(PENDING + " ORDER BY run_id").fetchall()
            exporter = export.Exporter(con, lake, consumer.writer_id)
            for _ in range(args.repeat):
                for name, sync in ways.items():
                    export.sync = sync
                    started = time.perf_counter()
                    exporter.export(con, runs)
                    times[name].append(time.perf_counter() - started)
        files = sum(1 for _ in lake.rglob("*.parquet"))
    load = os.getloadavg()[0]
    print(f"\none batch: {len(runs)} runs, {files} files; load average {load:.1f}\n")
    print("| export of the batch | median s | min s | max s | vs fsync each |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(times["fsync each (now)"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.2f} | {min(values):.2f} | {max(values):.2f} "
            f"| {median / base:.2f}x |"
        )


if __name__ == "__main__":
    main()

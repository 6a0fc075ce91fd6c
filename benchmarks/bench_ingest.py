"""Catch-up speed of the DuckDB writer against DuckDB's own ``read_json`` (the floor).

A backlog of metric events (8 values each, several runs, segment roll-overs) is written
through the real producer API. Then, each in a fresh process so that peak RSS is its own:

* writer: ``waddle-consume --once`` semantics (``run_consumer(DuckDBWriter, once=True)``)
  into an empty database file;
* floor: one ``INSERT INTO metrics SELECT ... FROM read_json(<segments>)`` per stream
  into an empty database file with the same ``metrics`` table, DuckDB parsing the same
  segments itself (no Python per event, all cores).

Both are repeated; the table shows medians, values per second, peak RSS and the ratio.

    python benchmarks/bench_ingest.py                       # 2,000,000 values, 3 repeats
    python benchmarks/bench_ingest.py --values 4000000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from backlog import write_backlog

VALUES_PER_EVENT = 8
FLOOR_TABLE = (
    "CREATE TABLE metrics (run_id VARCHAR, key VARCHAR, step BIGINT, ts DOUBLE, value DOUBLE)"
)
FLOOR_INSERT = """
INSERT INTO metrics
SELECT ?, unnest(map_keys(data)), step, ts, unnest(map_values(data))
FROM read_json(?, format = 'newline_delimited',
               columns = {seq: 'BIGINT', ts: 'DOUBLE', type: 'VARCHAR', step: 'BIGINT',
                          data: 'MAP(VARCHAR, DOUBLE)'})
WHERE type = 'metrics'
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_writer(root: Path, db: Path) -> dict[str, float]:
    import duckdb

    from waddle.consumers.base import run_consumer
    from waddle.consumers.duckdb.writer import DuckDBWriter

    writer = DuckDBWriter(root, db, snapshot_interval=0)
    started, cpu = time.perf_counter(), cpu_seconds()
    run_consumer(writer, root, threading.Event(), once=True)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    with duckdb.connect(str(db), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM metrics").fetchone()
    return {"seconds": seconds, "cpu": cpu, "rows": rows, "rss_mb": peak_rss_mb()}


def child_floor(root: Path, db: Path) -> dict[str, float]:
    import duckdb

    from waddle.eventlog.segment import list_segments, log_dir, segment_name

    con = duckdb.connect(str(db))
    con.execute(FLOOR_TABLE)
    started, cpu = time.perf_counter(), cpu_seconds()
    for stream_dir in sorted(log_dir(root).iterdir()):
        files = [str(stream_dir / segment_name(s)) for s in list_segments(stream_dir)]
        con.execute(FLOOR_INSERT, [stream_dir.name, files])
    con.execute("CHECKPOINT")
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    (rows,) = con.execute("SELECT count(*) FROM metrics").fetchone()
    con.close()
    return {"seconds": seconds, "cpu": cpu, "rows": rows, "rss_mb": peak_rss_mb()}


def measure(kind: str, root: Path, db: Path) -> dict[str, float]:
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    for leftover in (root / "state").glob("*"):
        leftover.unlink()
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(root), str(db)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--segment-bytes", type=int, default=8 << 20)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "ROOT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, root, db = args.child
        run = child_writer if kind == "writer" else child_floor
        print(json.dumps(run(Path(root), Path(db))))
        return 0
    with tempfile.TemporaryDirectory(prefix="waddle-bench-ingest-") as tmp:
        root = Path(tmp) / "w"
        started = time.perf_counter()
        write_backlog(
            root,
            args.values // VALUES_PER_EVENT,
            args.runs,
            args.segment_bytes,
            lambda rng, _step: {f"train/m{j}": rng.random() for j in range(VALUES_PER_EVENT)},
            "bench",
        )
        size = sum(p.stat().st_size for p in root.glob("log/*/*.ndjson"))
        print(
            f"backlog: {args.values:,} values in {args.runs} streams, "
            f"{size / 2**20:.0f} MiB of segments, written in {time.perf_counter() - started:.1f} s"
        )
        results: dict[str, list[dict[str, float]]] = {"writer": [], "floor": []}
        for _ in range(args.repeat):
            for kind in results:
                results[kind].append(measure(kind, root, Path(tmp) / f"{kind}.duckdb"))
    rates = {}
    title = f"ingest (median of {args.repeat})"
    print(f"\n{title:<28}{'values/s':>12}{'wall s':>8}{'CPU s':>8}{'peak RSS MB':>13}")
    for kind, label in (("writer", "waddle DuckDB writer"), ("floor", "DuckDB read_json (floor)")):
        seconds = statistics.median(r["seconds"] for r in results[kind])
        rows = results[kind][0]["rows"]
        rates[kind] = rows / seconds
        cpu = statistics.median(r["cpu"] for r in results[kind])
        rss = max(r["rss_mb"] for r in results[kind])
        print(f"{label:<28}{rates[kind]:>12,.0f}{seconds:>8.2f}{cpu:>8.2f}{rss:>13.0f}")
        if rows != args.values // VALUES_PER_EVENT // args.runs * args.runs * VALUES_PER_EVENT:
            print(f"  ! {kind} stored {rows:,} rows")
    print(f"{'ratio writer / floor':<28}{rates['writer'] / rates['floor']:>12.2f}")
    print(f"(load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Chart queries: a metric of 1,000,000 steps, downsampled on the server, against DuckDB.

One run logs one metric for 1,000,000 steps through the real producer (with spikes and
a NaN); a real ``waddle serve`` ingests it. Then, warm, repeated:

* api: ``GET /api/runs/{id}/metrics?keys=loss&max_points=2000`` over HTTP (M4
  downsampling in DuckDB, JSON encoding, the HTTP round trip);
* m4 sql: the same downsampling query straight through DuckDB (no HTTP, no JSON);
* full select: a plain ``SELECT step, value ... ORDER BY step`` of the whole series
  through DuckDB into Python (what a server that does not downsample would start from).

The DuckDB figures are taken after the server stopped (DuckDB lets one process open the
file), on the same database file.

    python benchmarks/bench_query.py                     # 1,000,000 steps, 30 requests
    python benchmarks/bench_query.py --steps 200000 --repeat 50
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving import start_server

HERE = Path(__file__).resolve().parent
RUN_ID = "benchquery"


def write_run(root: Path, steps: int) -> None:
    import waddle

    run = waddle.init(project="bench-query", id=RUN_ID, root=root, system_metrics=False)
    for step in range(steps):
        loss = 1.0 / (1 + step / 1000) + (5.0 if step % 99_991 == 0 else 0.0)
        run.log({"loss": math.nan if step == steps // 2 else loss})
    run.finish()


def get(host: str, port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=120)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def wait_ingested(host: str, port: int, steps: int) -> float:
    start = time.monotonic()
    while time.monotonic() - start < 1800:
        status, body = get(host, port, f"/api/runs/{RUN_ID}")
        if status == 200 and json.loads(body).get("status") == "finished":
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit("the server did not ingest the run within 30 minutes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "bench_query.json", help="JSON figures"
    )
    args = parser.parse_args()
    path = f"/api/runs/{RUN_ID}/metrics?keys=loss&max_points={args.max_points}"
    with tempfile.TemporaryDirectory(prefix="waddle-bench-query-") as folder:
        root = Path(folder) / "root"
        started = time.perf_counter()
        write_run(root, args.steps)
        logged = time.perf_counter() - started
        server, url = start_server(root)
        host, _, port_text = url.removeprefix("http://").rpartition(":")
        port = int(port_text)
        try:
            ingest = wait_ingested(host, port, args.steps)
            status, body = get(host, port, path)
            series = json.loads(body)["series"][0]
            assert status == 200 and series["count"] == args.steps, body[:300]
            assert "NaN" in series["y"] and max(y for y in series["y"] if y != "NaN") > 5
            api = timed(lambda: get(host, port, path), args.repeat)
        finally:
            server.terminate()
            server.wait(60)
        figures = duckdb_figures(root / "waddle.duckdb", args.max_points, args.repeat)
    results = {
        "steps": args.steps,
        "points": len(series["x"]),
        "log_s": logged,
        "ingest_s": ingest,
        "api": api,
        **figures,
    }
    cpus = os.cpu_count()
    print(f"\nOne metric, {args.steps:,} steps, max_points={args.max_points} ({cpus} CPUs)\n")
    print(f"points returned: {len(series['x'])}; logged in {logged:.1f} s, ", end="")
    print(f"ingested {ingest:.1f} s later\n")
    print("| query | median ms | min ms | ratio to api |")
    print("|---|---:|---:|---:|")
    base = statistics.median(api)
    for name, times in (
        ("api: GET .../metrics (M4 in DuckDB + JSON + HTTP)", api),
        ("m4 sql through DuckDB", figures["m4_sql"]),
        ("full select, fetchall (1 row per step)", figures["full_fetchall"]),
        ("full select, fetchnumpy", figures["full_fetchnumpy"]),
    ):
        median = statistics.median(times)
        print(f"| {name} | {1000 * median:.1f} | {1000 * min(times):.1f} | {median / base:.1f}x |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))


def duckdb_figures(db: Path, max_points: int, repeat: int) -> dict[str, list[float]]:
    import duckdb

    from waddle.store import queries
    from waddle.store.downsample import bucket_width, buckets_for, m4_sql

    source = (
        "SELECT step AS x, coalesce(value, 'NaN'::DOUBLE) AS y "
        "FROM metrics WHERE run_id = ? AND key = ?"
    )
    full = "SELECT step, value FROM metrics WHERE run_id = ? AND key = ? ORDER BY step"
    buckets = buckets_for(max_points)
    with duckdb.connect(str(db), read_only=True) as con:
        lo, hi = con.execute(f"SELECT min(x), max(x) FROM ({source})", [RUN_ID, "loss"]).fetchone()
        params = [lo, bucket_width(lo, hi, buckets), buckets - 1, RUN_ID, "loss"]
        return {
            "m4_sql": timed(lambda: con.execute(m4_sql(source), params).fetchall(), repeat),
            "series_fn": timed(
                lambda: queries.metric_series(con, RUN_ID, "loss", "step", max_points), repeat
            ),
            "full_fetchall": timed(
                lambda: con.execute(full, [RUN_ID, "loss"]).fetchall(), max(3, repeat // 5)
            ),
            "full_fetchnumpy": timed(
                lambda: con.execute(full, [RUN_ID, "loss"]).fetchnumpy(), max(3, repeat // 5)
            ),
        }


if __name__ == "__main__":
    main()

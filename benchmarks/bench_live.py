"""Live latency: from ``run.log()`` returning to the event arriving at a WebSocket client.

A real ``waddle serve`` (default settings: the DuckDB writer, the broadcaster and the
web app in one process) runs on a loopback port. A producer process logs at a fixed
rate (1,000 and 20,000 calls per second by default) through the real ``waddle`` API; a
``websockets`` client subscribed to the project receives every event. The latency of an
event is its arrival time at the client minus its ``ts``, which the producer stamps just
before the ``write`` that ``log()`` returns after (same host, same clock). The first
half second of each rate is left out (connection warm-up).

    python benchmarks/bench_live.py                        # 1,000 and 20,000 calls/s, 5 s each
    python benchmarks/bench_live.py --rates 1000,20000,50000 --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving import start_server

HERE = Path(__file__).resolve().parent
WARMUP_S = 0.5
PRODUCER = r"""
import sys, time, waddle
root, run_id, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
run = waddle.init(project="bench-live", id=run_id, root=root, system_metrics=False)
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
done = 0
total = int(rate * seconds)
while done < total:
    due = min(total, int((time.perf_counter() - start) * rate) + 1)
    while done < due:
        run.log({"loss": 1.0 / (done + 1), "lr": 0.001, "step_time": 0.02})
        done += 1
    time.sleep(0.0005)
run.finish()
"""


async def measure(ws_url: str, root: Path, run_id: str, rate: float, seconds: float) -> list[float]:
    """Latencies (seconds) of every event of one producer run at ``rate`` calls/s."""
    import orjson
    from websockets.asyncio.client import connect

    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(root), run_id, str(rate), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    latencies: list[tuple[float, float]] = []
    try:
        async with connect(ws_url, max_size=None, open_timeout=10) as ws:
            await ws.send(json.dumps({"op": "subscribe", "runs": [run_id]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            assert producer.stdout is not None and producer.stdin is not None
            await asyncio.to_thread(producer.stdout.readline)
            producer.stdin.write(b"go\n")
            producer.stdin.flush()
            deadline = time.monotonic() + seconds + 60
            finished = False
            while not finished and time.monotonic() < deadline:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                now = time.time()
                for event in message.get("events", ()):
                    if event["type"] == "metrics":
                        latencies.append((event["ts"], now - event["ts"]))
                    finished = finished or event["type"] == "finish"
    finally:
        producer.wait(60)
    first = min(ts for ts, _ in latencies)
    return [latency for ts, latency in latencies if ts >= first + WARMUP_S]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="1000,20000", help="log calls per second, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of logging per rate")
    parser.add_argument("--rounds", type=int, default=1, help="repeats of each rate")
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "bench_live.json", help="JSON figures"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="waddle-bench-live-") as folder:
        root = Path(folder) / "root"
        server, url = start_server(root)
        ws_url = url.replace("http://", "ws://") + "/ws"
        try:
            for round_ in range(args.rounds):
                for rate in rates:
                    run_id = f"live{int(rate)}r{round_}"
                    latencies = asyncio.run(measure(ws_url, root, run_id, rate, args.seconds))
                    results.append(
                        {
                            "rate": rate,
                            "round": round_,
                            "events": len(latencies),
                            "p50_ms": 1000 * statistics.median(latencies),
                            "p99_ms": 1000 * percentile(latencies, 0.99),
                            "max_ms": 1000 * max(latencies),
                        }
                    )
        finally:
            server.terminate()
            server.wait(60)
    print(f"\nLive latency, log() to WebSocket client ({os.cpu_count()} CPUs, default settings)\n")
    print("| calls/s | events | p50 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|")
    for rate in rates:
        rows = [r for r in results if r["rate"] == rate]
        p50 = statistics.median(r["p50_ms"] for r in rows)
        p99 = statistics.median(r["p99_ms"] for r in rows)
        worst = max(r["max_ms"] for r in rows)
        events = sum(r["events"] for r in rows)
        print(f"| {rate:,.0f} | {events:,} | {p50:.1f} | {p99:.1f} | {worst:.1f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

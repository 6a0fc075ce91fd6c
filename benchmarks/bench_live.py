"""Live latency: from ``run.log()`` returning to the event arriving at a WebSocket client.

A real ``waddle serve`` (default settings: the DuckDB writer, the broadcaster and the
web app in one process) runs on a loopback port. A producer process logs at a fixed
rate (1,000 and 20,000 calls per second by default) through the real ``waddle`` API; a
``websockets`` client subscribed to the run receives every event. The latency of an
event is its arrival time at the client minus its ``ts``, which the producer stamps just
before the ``write`` that ``log()`` returns after (same host, same clock). The first
half second of each rate is left out (connection warm-up).

Finished runs in the folder must not slow the live one down (issue #14): ``--finished``
names folder sizes (0 and 10,000 finished runs of 10 events by default, written as
``bench_idle.py`` writes them). Each size gets its own folder and its own server, all
started and caught up before the first round, so every measurement has the same
process layout (every server up, one producer, one client); rounds interleave the sizes
(A B, B A, ...) and the table gives each size's medians and its ratio to the first size,
taken round by round, so that load on a shared machine hits both sides alike. It also
gives the server's CPU (user + system, psutil) per event over each measurement: a figure
that holds better than latency on a loaded machine.

    python benchmarks/bench_live.py                        # 0 and 10,000 finished runs, ~3 min
    python benchmarks/bench_live.py --finished 0 --rates 1000,20000,50000 --seconds 10
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

from bench_idle import CATCH_UP_TIMEOUT_S, SETTLE_S, caught_up, write_runs
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


def start_caught_up(root: Path, finished: int) -> tuple[subprocess.Popen[bytes], str]:
    """A ``waddle serve`` over ``finished`` finished runs, and its ``/ws`` URL, once caught up."""
    write_runs(root, finished)
    server, url = start_server(root)
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while not caught_up(root, finished):
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise SystemExit(f"waddle serve did not catch up with {finished} finished runs")
        time.sleep(0.5)
    return server, url.replace("http://", "ws://") + "/ws"


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_rounds(
    servers: dict[int, tuple[Path, str, int]], rates: list[float], seconds: float, rounds: int
) -> list[dict[str, float]]:
    """Every round's figures; the folder sizes alternate order from one round to the next."""
    results = []
    sizes = list(servers)
    for round_ in range(rounds):
        for rate in rates:
            for finished in sizes if round_ % 2 == 0 else sizes[::-1]:
                root, ws_url, pid = servers[finished]
                run_id = f"live{int(rate)}r{round_}"
                load = os.getloadavg()[0]
                cpu = cpu_seconds(pid)
                latencies = asyncio.run(measure(ws_url, root, run_id, rate, seconds))
                cpu = cpu_seconds(pid) - cpu
                results.append(
                    {
                        "finished": finished,
                        "rate": rate,
                        "round": round_,
                        "load": load,
                        "events": len(latencies),
                        "p50_ms": 1000 * statistics.median(latencies),
                        "p99_ms": 1000 * percentile(latencies, 0.99),
                        "max_ms": 1000 * max(latencies),
                        "server_us_per_event": 1e6 * cpu / (rate * seconds),
                    }
                )
    return results


def ratio(
    results: list[dict[str, float]], finished: int, base: int, rate: float, key: str
) -> float:
    """Median over rounds of ``key`` with ``finished`` runs over the same round's with ``base``."""
    by_round = {(r["finished"], r["round"]): r[key] for r in results if r["rate"] == rate}
    rounds = sorted({r for _, r in by_round})
    return statistics.median(by_round[finished, r] / by_round[base, r] for r in rounds)


def report(results: list[dict[str, float]], sizes: list[int], rates: list[float]) -> None:
    """Markdown table: each size's medians over rounds and its paired ratio to ``sizes[0]``."""
    print(f"\nLive latency, log() to WebSocket client ({os.cpu_count()} CPUs, default settings)\n")
    print(
        "| finished runs | calls/s | events | p50 ms | p99 ms | max ms | p50 ratio | p99 ratio "
        "| server CPU µs/event | CPU ratio |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rate in rates:
        for finished in sizes:
            rows = [r for r in results if r["rate"] == rate and r["finished"] == finished]
            p50 = statistics.median(r["p50_ms"] for r in rows)
            p99 = statistics.median(r["p99_ms"] for r in rows)
            worst = max(r["max_ms"] for r in rows)
            events = sum(r["events"] for r in rows)
            cpu = statistics.median(r["server_us_per_event"] for r in rows)
            ratios = [
                f"{ratio(results, finished, sizes[0], rate, key):.2f}x"
                for key in ("p50_ms", "p99_ms", "server_us_per_event")
            ]
            print(
                f"| {finished:,} | {rate:,.0f} | {events:,} | {p50:.1f} | {p99:.1f} "
                f"| {worst:.1f} | {ratios[0]} | {ratios[1]} | {cpu:.1f} | {ratios[2]} |"
            )
    loads = [r["load"] for r in results]
    print(f"\nload average (1 min) as each measurement began: {min(loads):.1f} to {max(loads):.1f}")
    for rate in rates:
        for finished in sizes:
            rows = sorted(
                (r for r in results if r["rate"] == rate and r["finished"] == finished),
                key=lambda r: r["round"],
            )
            figures = " ".join(f"{r['p50_ms']:.1f}/{r['p99_ms']:.1f}" for r in rows)
            print(f"rounds, p50/p99 ms, {finished:,} finished at {rate:,.0f}/s: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rates", default="1000,20000", help="log calls per second, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of logging per rate")
    parser.add_argument("--rounds", type=int, default=3, help="repeats of each rate and size")
    parser.add_argument(
        "--finished",
        default="0,10000",
        help="finished runs in the folder before the live run starts, comma-separated; "
        "ratios are to the first",
    )
    parser.add_argument(
        "--output", type=Path, default=HERE / "results" / "bench_live.json", help="JSON figures"
    )
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    sizes = [int(n) for n in args.finished.split(",")]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%F %T %Z')}")
    with tempfile.TemporaryDirectory(prefix="waddle-bench-live-") as folder:
        servers: dict[int, tuple[Path, str, int]] = {}
        procs = []
        try:
            for finished in sizes:
                root = Path(folder) / f"root{finished}"
                server, ws_url = start_caught_up(root, finished)
                procs.append(server)
                servers[finished] = (root, ws_url, server.pid)
            time.sleep(SETTLE_S)
            results = run_rounds(servers, rates, args.seconds, args.rounds)
        finally:
            for server in procs:
                server.terminate()
                server.wait(60)
    report(results, sizes, rates)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

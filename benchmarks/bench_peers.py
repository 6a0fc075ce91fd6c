"""Waddle side by side with wandb, Trackio, MLflow, TensorBoardX and Aim, all offline.

    python benchmarks/bench_peers.py [--n 2000] [--rounds 3] [--trackers a,b] [--json PATH]

Each tracker and round runs in a fresh subprocess (``peers/worker.py``); rounds are
interleaved (A B C, A B C, ...) so drift on a shared machine hits every tracker alike.

Before each measured log() run, a run with no calls is made in the same folder by its
own process: its init time is reported as "new store", and the measured run is then a
second run in an existing store, as most runs are.

This parent samples the RSS of the worker's child processes (wandb's services) every
50 ms, times what exit costs until the worker and every child are gone, and kills (and
reports) children left behind. Before each worker starts, it waits for other work on
the machine to use under a quarter of its CPU (``--max-wait`` seconds at most in all),
and records how busy the machine was.

A tracker that is not installed is skipped with one line; one that fails is reported
with its log's last line and left out of later rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from peers.report import render, summarize
from peers.trackers import OFFLINE_ENV, TRACKERS, tracker

HERE = Path(__file__).resolve().parent
WORKER_TIMEOUT_S = 600
SAMPLE_S = 0.05
LEFTOVER_GRACE_S = 10
FAMILIES = {name.split("-")[0] for name in TRACKERS}  # e.g. "mlflow" selects mlflow-*
QUIET_PCT = 25  # machine-wide CPU % that other work may use when a measurement starts
PER_START_S = 10


class WorkerFailed(Exception):
    """A worker exited without results; the message is its log's last line."""


class TreeWatch(threading.Thread):
    """Peak summed RSS of a process's descendants, sampled; remembers who it saw.

    A child that still runs the worker's own command line is a fork on its way to
    ``exec`` (how ``subprocess`` starts git or a service): its RSS is the worker's
    shared pages, so it is left out until it has become a program of its own.
    """

    def __init__(self, pid: int, cmd: list[str]) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.forked = cmd
        self.seen: dict[int, psutil.Process] = {}
        self.names: dict[int, str] = {}  # a process's name cannot be asked once it is gone
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_S):
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                return
            total = 0
            for child in children:
                self.seen.setdefault(child.pid, child)
                with contextlib.suppress(psutil.NoSuchProcess):
                    if child.cmdline() == self.forked:
                        continue
                    total += child.memory_info().rss
                    self.names.setdefault(child.pid, child.name())
            self.peak = max(self.peak, total)


class QuietGate:
    """Waits for other work on a shared machine to settle before a measurement starts.

    It waits at most ``PER_START_S`` for one measurement and ``budget_s`` over the whole
    benchmark, so a machine that never quiets down costs minutes, not hours, and the
    waiting is spread over the rounds; each measurement records how busy it was.
    """

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s

    def wait(self) -> float:
        """Block until others use under QUIET_PCT of the CPU, or the time allowed is up."""
        busy = psutil.cpu_percent(interval=0.25)
        allowed = min(self.budget_s, PER_START_S)
        while busy > QUIET_PCT and allowed > 0:
            busy = psutil.cpu_percent(interval=1)
            allowed -= 1
            self.budget_s -= 1
        return busy


def run_worker(
    name: str, workload: str, n: int, workdir: Path, env: dict[str, str], gate: QuietGate
) -> dict:
    """Run one worker to completion; its figures plus exit time, child RSS and leftovers."""
    cmd = [sys.executable, "-m", "peers.worker", name, workload, str(n), str(workdir)]
    others_cpu_pct = gate.wait()
    proc = subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, start_new_session=True
    )
    watchdog = threading.Timer(WORKER_TIMEOUT_S, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    watch = TreeWatch(proc.pid, cmd)
    watch.start()
    assert proc.stdout is not None
    line = proc.stdout.readline()
    finished = time.perf_counter()
    proc.wait()  # blocking waitpid, no polling: exit is timed to the microsecond
    watch.done.set()
    watch.join()
    _, alive = psutil.wait_procs(list(watch.seen.values()), timeout=LEFTOVER_GRACE_S)
    exited = time.perf_counter()
    watchdog.cancel()
    left_running = sorted(watch.names.get(child.pid, "fork") for child in alive)
    for child in alive:
        child.kill()
    if not line:
        chatter = (workdir.parent / f"{workdir.name}.log").read_text(errors="replace")
        last = chatter.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise WorkerFailed(last[0])
    return json.loads(line) | {
        "others_cpu_pct": others_cpu_pct,
        "exit_ms": (exited - finished) * 1e3,
        "child_rss_mb": watch.peak / 2**20,
        "children": sorted(set(watch.names.values())),
        "left_running": left_running,
    }


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under ``path``."""
    return sum(
        os.lstat(os.path.join(folder, f)).st_size
        for folder, _, files in os.walk(path)
        for f in files
    )


def measure(name: str, workload: str, n: int, workdir: Path, home: Path, gate: QuietGate) -> dict:
    """One row of one round in a folder of its own, removed afterwards.

    For the log workload, a run with no calls first makes the store, in its own
    process; the measured run is then the second run in it, as most runs are.
    """
    workdir.mkdir()
    env = worker_env(name, workdir, home)
    if workload == "train":
        figures = run_worker(name, workload, n, workdir, env, gate)
    else:
        fresh = run_worker(name, "log", 0, workdir, env, gate)
        before = tree_bytes(workdir)
        figures = run_worker(name, "log", n, workdir, env, gate)
        figures["bytes"] = tree_bytes(workdir) - before
        figures["bytes_per_value"] = figures["bytes"] / (n * 8)
        figures["init_new_store_ms"] = fresh["init_ms"]
    shutil.rmtree(workdir)
    return figures


def worker_env(name: str, workdir: Path, home: Path) -> dict[str, str]:
    """Offline, telemetry-free, everything under ``workdir``; our package importable.

    Bytecode caching is allowed, as on a user's machine: without it, a package used
    from a source checkout (Waddle's editable install) recompiles at every import.
    """
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    inherited = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return (
        inherited
        | OFFLINE_ENV
        | {"HOME": str(home), "PYTHONPATH": path}
        | tracker(name).env(workdir)
    )


def select_rows(wanted: str | None) -> list[str]:
    """Rows named by --trackers (``mlflow`` also selects ``mlflow-*``) that are installed."""
    names = [
        name
        for name in TRACKERS
        if wanted is None or any(name == w or name.startswith(w + "-") for w in wanted.split(","))
    ]
    rows = []
    for name in names:
        module = TRACKERS[name].module
        if module and importlib.util.find_spec(module) is None:
            print(f"skipped {name}: {module} is not installed", file=sys.stderr)
        else:
            rows.append(name)
    return rows


def bench(
    rows: list[str], n: int, steps: int, rounds: int, gate: QuietGate
) -> dict[str, dict[str, list]]:
    """Interleaved rounds of both workloads; per-round figures of every row."""
    plan = (("log", rows, n), ("train", ["none", *rows], steps))
    raw: dict[str, dict[str, list]] = {w: {name: [] for name in names} for w, names, _ in plan}
    failed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="waddle-bench-peers-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        for rnd in range(rounds):
            for workload, names, size in plan:
                for name in names:
                    if name in failed:
                        continue
                    t0 = time.perf_counter()
                    workdir = Path(tmp) / f"r{rnd}-{workload}-{name}"
                    try:
                        figures = measure(name, workload, size, workdir, home, gate)
                    except WorkerFailed as exc:
                        print(f"failed {name} ({workload}): {exc}", file=sys.stderr)
                        failed.add(name)
                        continue
                    raw[workload][name].append(figures | {"round": rnd})
                    took = time.perf_counter() - t0
                    print(
                        f"round {rnd + 1}/{rounds} {workload:5} {name:13} {took:5.1f} s",
                        file=sys.stderr,
                    )
    return raw


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def source() -> str:
    """The Waddle commit measured, and whether the tree had uncommitted changes."""
    git = ["git", "-C", str(HERE.parent)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "waddle"], capture_output=True)
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout else "")


def versions(rows: list[str]) -> dict[str, str]:
    """Installed version of each row's distribution."""
    found = {}
    for name in rows:
        dist = TRACKERS[name].dist
        try:
            found[name] = importlib.metadata.version(dist) if dist else "stdlib"
        except importlib.metadata.PackageNotFoundError:
            found[name] = "?"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="log calls per run (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument(
        "--train-steps", type=int, help="training-loop steps (default min(n, 1000))"
    )
    parser.add_argument("--trackers", help="comma-separated rows, e.g. waddle,wandb,mlflow")
    parser.add_argument(
        "--max-wait",
        type=float,
        help="seconds in all to wait for a busy machine to quiet (default 30 per round)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=HERE / "results" / "bench_peers.json",
        help="where to write every figure (default benchmarks/results/)",
    )
    args = parser.parse_args()
    if args.n < 1 or args.rounds < 1:
        parser.error("--n and --rounds must be at least 1")
    unknown = set((args.trackers or "").split(",")) - {""} - set(TRACKERS) - FAMILIES
    if unknown:
        parser.error(f"unknown trackers {sorted(unknown)}; choose from {', '.join(TRACKERS)}")
    rows = select_rows(args.trackers)
    steps = args.train_steps or min(args.n, 1000)
    gate = QuietGate(30 * args.rounds if args.max_wait is None else args.max_wait)
    raw = bench(rows, args.n, steps, args.rounds, gate)
    summary = summarize(raw)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", *sys.argv]),
        "n": args.n,
        "train_steps": steps,
        "rounds": args.rounds,
        "machine": machine(),
        "waddle_source": source(),
        "versions": versions(rows),
    }
    starts = [r["others_cpu_pct"] for w in raw.values() for rs in w.values() for r in rs]
    meta["started_busy"] = f"{sum(pct > QUIET_PCT for pct in starts)} of {len(starts)}"
    notes = {name: TRACKERS[name].note for name in rows if raw["log"][name]}
    print(render(summary, notes, meta))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "summary": summary, "rounds": raw}, indent=1))
    print(f"\nwrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()

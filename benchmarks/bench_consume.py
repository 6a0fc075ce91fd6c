"""Local catch-up as a user runs it: ``waddle-consume --dir D --once`` against DuckDB's floor.

``bench_ingest.py`` times the catch-up inside a process; a user waits for the whole
command: interpreter start, imports, schema creation, catch-up, commit, the runs
snapshot, threads stopped, exit. This benchmark times exactly that, from spawn to exit,
for two commands over the same segments (a backlog written through the real producer):

* ``waddle-consume --dir D --once``, as the installed entry point runs it (bytecode
  cached, as pip leaves it), into an empty database (state files and snapshot removed
  before each round);
* the floor: ``python -c "import duckdb; ..."`` that creates the same ``metrics`` table
  and lets DuckDB's ``read_json`` insert the segments (``bench_ingest.FLOOR_INSERT``).

Rounds alternate which command goes first. The table shows medians over rounds; the
headline is the median of each round's ratio floor / waddle (the two commands of a round
share the machine's load, which on a shared machine is what moves the most).

    python benchmarks/bench_consume.py                 # 2,000,000 values, 5 rounds: ~45 s
    python benchmarks/bench_consume.py --rounds 9
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backlog import write_backlog
from bench_ingest import FLOOR_INSERT, FLOOR_TABLE, VALUES_PER_EVENT

HERE = Path(__file__).resolve().parent
# What the ``waddle-consume`` script that pip installs runs.
CONSUME = "import sys; from waddle.cli import consume_main; sys.exit(consume_main())"
WARM_UP = "import waddle.cli.parser, waddle.consumers.daemon, waddle.consumers.duckdb.writer"
# The floor imports nothing but duckdb, as a user's one-liner would.
FLOOR = f"""
import os, sys, duckdb
root, db = sys.argv[1:]
con = duckdb.connect(db)
con.execute({FLOOR_TABLE!r})
for stream in sorted(os.listdir(os.path.join(root, "log"))):
    folder = os.path.join(root, "log", stream)
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".ndjson"))
    con.execute({FLOOR_INSERT!r}, [stream, files])
con.close()
"""


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds of ``command``, from spawn to exit."""
    cpu, started = child_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode:
        sys.exit(f"{command[:3]} failed ({done.returncode}):\n{done.stderr.decode()}")
    return {"seconds": time.perf_counter() - started, "cpu": child_cpu() - cpu}


def rows_in(db: Path) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        ((rows,),) = con.execute("SELECT count(*) FROM metrics").fetchall()
    return int(rows)


def fresh(root: Path, floor_db: Path) -> None:
    """Remove what an earlier round left: databases, snapshot, state files."""
    for leftover in [*root.glob("waddle.*"), *floor_db.parent.glob(floor_db.name + "*")]:
        leftover.unlink()
    shutil.rmtree(root / "state", ignore_errors=True)


def round_of(
    root: Path, floor_db: Path, env: dict[str, str], first: str
) -> dict[str, dict[str, float]]:
    commands = {
        "waddle": [sys.executable, "-c", CONSUME, "--dir", str(root), "--once"],
        "floor": [sys.executable, "-c", FLOOR, str(root), str(floor_db)],
    }
    results: dict[str, dict[str, float]] = {}
    for kind in sorted(commands, key=lambda k: k != first):
        fresh(root, floor_db)
        results[kind] = timed(commands[kind], env)
        results[kind]["rows"] = rows_in(root / "waddle.duckdb" if kind == "waddle" else floor_db)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--segment-bytes", type=int, default=8 << 20)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "bench_consume.json")
    args = parser.parse_args()
    # The package from this checkout, whether or not (and wherever) it is installed, with
    # its bytecode cached as an installed package has it (PYTHONDONTWRITEBYTECODE would
    # compile every edited module at each start, a cost no user pays).
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    timed([sys.executable, "-c", WARM_UP], env)
    load = os.getloadavg()[0]
    rounds = []
    with tempfile.TemporaryDirectory(prefix="waddle-bench-consume-") as tmp:
        root, floor_db = Path(tmp) / "w", Path(tmp) / "floor.duckdb"
        events = args.values // VALUES_PER_EVENT
        write_backlog(
            root,
            events,
            args.runs,
            args.segment_bytes,
            lambda rng, _step: {f"train/m{j}": rng.random() for j in range(VALUES_PER_EVENT)},
            "bench",
        )
        size = sum(p.stat().st_size for p in root.glob("log/*/*.ndjson"))
        print(f"backlog: {args.values:,} values in {args.runs} streams, {size / 2**20:.0f} MiB")
        for index in range(args.rounds):
            rounds.append(round_of(root, floor_db, env, "waddle" if index % 2 else "floor"))
    expected = events // args.runs * args.runs * VALUES_PER_EVENT
    print(f"\n| whole command (median of {args.rounds}) | wall s | min | max | CPU s |")
    print("|---|---:|---:|---:|---:|")
    for kind, label in (
        ("waddle", "waddle-consume --once"),
        ("floor", "python -c duckdb read_json"),
    ):
        walls = [r[kind]["seconds"] for r in rounds]
        cpu = statistics.median(r[kind]["cpu"] for r in rounds)
        print(
            f"| {label} | {statistics.median(walls):.2f} | {min(walls):.2f} | "
            f"{max(walls):.2f} | {cpu:.2f} |"
        )
        for r in rounds:
            if r[kind]["rows"] != expected:
                print(f"  ! {kind} stored {r[kind]['rows']:,} rows, not {expected:,}")
    ratios = [r["floor"]["seconds"] / r["waddle"]["seconds"] for r in rounds]
    print(
        f"\nratio floor / waddle (the writer's speed as a fraction of the floor's): median "
        f"{statistics.median(ratios):.2f}, rounds {' '.join(f'{x:.2f}' for x in ratios)}"
    )
    after = os.getloadavg()[0]
    print(f"load average (1 min): {load:.2f} before, {after:.2f} after, {os.cpu_count()} CPUs")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"load": load, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

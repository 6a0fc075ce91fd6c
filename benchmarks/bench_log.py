"""run.log() against the floor it cannot beat, side by side in one process.

The floor is what any tracker must do at least: orjson-serialise the same envelope
(seq, ts, type, step, data) and hand it to the kernel with one os.write on an O_APPEND
descriptor. Rounds alternate between the two so machine drift hits both alike.
Also times waddle.init inside a git repository and checks what ``import waddle`` loads.

    python benchmarks/bench_log.py [--calls 100000] [--rounds 5]

With ``--against TREE`` (another checkout, e.g. ``git worktree add /tmp/old 87b08ac``)
it compares two trees instead: each round runs a fresh process per tree, alternating,
and each process times its own floor beside its ``run.log``, so that the ratios stay
comparable on a shared machine whose speed drifts between rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

DATA = {f"metric_{i}": 0.1 * i for i in range(8)}
HEAVY = ("duckdb", "starlette", "uvicorn", "websockets", "pydantic")
HERE = Path(__file__).resolve().parent.parent  # this tree


def time_calls(call: Callable[[int], object], calls: int) -> list[float]:
    """Per-call durations in microseconds."""
    clock = time.perf_counter_ns
    samples = [0.0] * calls
    for i in range(calls):
        start = clock()
        call(i)
        samples[i] = (clock() - start) / 1000.0
    return samples


def floor_round(folder: Path, calls: int) -> list[float]:
    fd = os.open(folder / "floor.ndjson", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    dumps, write, now = orjson.dumps, os.write, time.time

    def call(i: int) -> None:
        event = {"seq": i, "ts": now(), "type": "metrics", "step": i, "data": DATA}
        write(fd, dumps(event, option=orjson.OPT_APPEND_NEWLINE))

    try:
        return time_calls(call, calls)
    finally:
        os.close(fd)


def waddle_round(folder: Path, calls: int) -> list[float]:
    import waddle

    run = waddle.init(project="bench", root=folder, system_metrics=False)
    try:
        return time_calls(lambda _i: run.log(DATA), calls)
    finally:
        run.finish()


def summarise(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean": statistics.fmean(ordered),
        "p50": ordered[len(ordered) // 2],
        "p99": ordered[int(len(ordered) * 0.99)],
    }


def init_ms(rounds: int) -> list[float]:
    """waddle.init (GPU probe off) in a fresh git repository, in a fresh process each time."""
    script = (
        "import time, waddle; t = time.perf_counter(); "
        "r = waddle.init(project='bench', system_metrics=False); "
        "print((time.perf_counter() - t) * 1000); r.finish()"
    )
    results = []
    with tempfile.TemporaryDirectory() as repo:
        for command in (["git", "init", "-q"], ["git", "commit", "-q", "--allow-empty", "-m", "x"]):
            subprocess.run(command, cwd=repo, check=True, env={**os.environ, **_GIT_ID})
        for _ in range(rounds):
            done = subprocess.run(
                [sys.executable, "-c", script], cwd=repo, capture_output=True, check=True, text=True
            )
            results.append(float(done.stdout))
    return results


_GIT_ID = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def heavy_modules_after_import() -> list[str]:
    code = f"import sys, waddle; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    return orjson.loads(done.stdout.replace("'", '"'))


def one_round(calls: int) -> None:
    """A round of ``--against``, in its own process: the floor and run.log, as JSON."""
    import waddle

    with tempfile.TemporaryDirectory() as tmp:
        floor = summarise(floor_round(Path(tmp), calls))
        log = summarise(waddle_round(Path(tmp), calls))
    print(json.dumps({"waddle": waddle.__file__, "floor": floor, "log": log}))


def round_of(tree: Path, calls: int) -> dict[str, dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = [sys.executable, __file__, "--calls", str(calls), "--one-round"]
    done = subprocess.run(script, env=env, capture_output=True, check=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if not result.pop("waddle").startswith(str(tree)):
        raise SystemExit(f"PYTHONPATH={tree} did not import waddle from that tree")
    return result


def compare(against: Path, calls: int, rounds: int) -> None:
    """Side by side: this tree and ``against``, a fresh process per tree and round."""
    trees = {"this tree": HERE, str(against): against.resolve()}
    rows: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            rows[name].append(round_of(tree, calls))
    print(f"{calls} calls x {rounds} rounds per tree, alternating; medians over rounds (µs)")
    print(f"{'tree':28} {'floor p50':>10} {'log p50':>8} {'log mean':>9} {'p50/floor':>10}")
    p50s = {}
    for name, results in rows.items():
        floor = statistics.median(r["floor"]["p50"] for r in results)
        p50s[name] = statistics.median(r["log"]["p50"] for r in results)
        mean = statistics.median(r["log"]["mean"] for r in results)
        ratio = statistics.median(r["log"]["p50"] / r["floor"]["p50"] for r in results)
        print(f"{name[-28:]:28} {floor:10.2f} {p50s[name]:8.2f} {mean:9.2f} {ratio:9.2f}x")
    print(f"run.log p50, this tree / {against}: {p50s['this tree'] / p50s[str(against)]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another tree to compare with")
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        return one_round(args.calls)
    if args.against:
        return compare(args.against, args.calls, args.rounds)
    rows: dict[str, list[dict[str, float]]] = {"floor (orjson + os.write)": [], "run.log": []}
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            folder = Path(tmp, str(index))
            folder.mkdir()
            rows["floor (orjson + os.write)"].append(summarise(floor_round(folder, args.calls)))
            rows["run.log"].append(summarise(waddle_round(folder, args.calls)))
    median = {
        name: {k: statistics.median(r[k] for r in rounds) for k in ("mean", "p50", "p99")}
        for name, rounds in rows.items()
    }
    floor = median["floor (orjson + os.write)"]["mean"]
    print(f"{args.calls} calls x {args.rounds} rounds, 8 floats per call; medians over rounds (µs)")
    print(f"{'':28} {'mean':>8} {'p50':>8} {'p99':>8} {'mean/floor':>11}")
    for name, m in median.items():
        print(
            f"{name:28} {m['mean']:8.2f} {m['p50']:8.2f} {m['p99']:8.2f} {m['mean'] / floor:10.2f}x"
        )
    inits = init_ms(args.rounds)
    print(
        f"waddle.init in a git repo (fresh process, no GPU probe): median "
        f"{statistics.median(inits):.1f} ms (min {min(inits):.1f}, max {max(inits):.1f})"
    )
    print(f"heavy modules loaded by `import waddle`: {heavy_modules_after_import() or 'none'}")


if __name__ == "__main__":
    main()

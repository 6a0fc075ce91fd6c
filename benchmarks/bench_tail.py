"""The tail loop's cost per live stream: CPU per stream read, this tree against another.

A central host's DuckDB writer and a relay both tail thousands of live streams through
``LogReader.follow``; each round reads every stream that grew. This measures that read
path alone: ``--streams`` streams (3,000 by default) each get one new metrics line
before every round, and a ``follow`` in a child process reads them; the child reports
its thread's CPU seconds per stream read over ``--rounds`` rounds (the first round,
which reads every stream from its start, is left out).

``--baseline DIR`` runs the same child on another version's ``waddle`` package (DIR holds
it, e.g. ``git archive REV waddle | tar -x -C DIR``) over the same folder, alternating
the two (A B, B A, ...), and prints the ratio round by round: a figure that holds on a
loaded machine. About 30 s with the defaults.

    python benchmarks/bench_tail.py --baseline /tmp/base
    python benchmarks/bench_tail.py --streams 1000 --rounds 50 --repeats 5
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent

CHILD = r"""
import json, os, sys, threading, time
code, root, streams, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.path.insert(0, code)
from waddle.eventlog.reader import LogReader
log = os.path.join(root, "log")
names = sorted(os.listdir(log))[:streams]
files, seqs = [], []
for name in names:
    folder = os.path.join(log, name)
    segment = max(f for f in os.listdir(folder) if f.endswith(".ndjson"))
    path = os.path.join(folder, segment)
    with open(path, "rb") as handle:
        last = json.loads(handle.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
    files.append(os.open(path, os.O_WRONLY | os.O_APPEND))
    seqs.append(last["seq"])
reader = LogReader(root, notify=False)
tail = reader.follow({}, threading.Event(), 0.0)
next(tail)  # every stream from its start
spent = 0.0
for round_ in range(rounds):
    for index, fd in enumerate(files):
        seqs[index] += 1
        line = '{"seq":%d,"ts":%f,"type":"metrics","step":%d,"data":{"loss":0.5,"acc":0.9}}\n'
        os.write(fd, (line % (seqs[index], time.time(), seqs[index])).encode())
    before = time.thread_time()
    batches = next(tail)
    spent += time.thread_time() - before
    assert sum(len(b.events) for b in batches) == streams, "a round missed a stream"
print(json.dumps({"us_per_read": 1e6 * spent / (rounds * streams)}))
"""


def write_streams(root: Path, streams: int) -> None:
    """``streams`` live streams of 20 metrics events each, dated a minute back."""
    from waddle.eventlog.writer import StreamWriter

    past = time.time() - 60
    for index in range(streams):
        stream_dir = root / "log" / f"live{index:05d}"
        writer = StreamWriter(stream_dir)
        for step in range(20):
            writer.append("metrics", {"step": step, "data": {"loss": 0.5, "acc": 0.9}})
        writer.close()
        os.utime(stream_dir, (past, past))


def measure(code: Path, root: Path, streams: int, rounds: int) -> float:
    """CPU µs per stream read of one child process reading with ``code``'s package."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(code), str(root), str(streams), str(rounds)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["us_per_read"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=20, help="rounds measured per child")
    parser.add_argument("--repeats", type=int, default=3, help="children per version")
    parser.add_argument("--baseline", type=Path, help="a folder holding another waddle")
    args = parser.parse_args()
    versions = {"this tree": TREE}
    if args.baseline is not None:
        versions["baseline"] = args.baseline
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {time.strftime('%F %T %Z')}")
    figures: dict[str, list[float]] = {name: [] for name in versions}
    loads = []
    with tempfile.TemporaryDirectory(prefix="waddle-bench-tail-") as folder:
        root = Path(folder)
        write_streams(root, args.streams)
        order = list(versions)
        for repeat in range(args.repeats):
            for name in order if repeat % 2 == 0 else order[::-1]:
                loads.append(os.getloadavg()[0])
                figures[name].append(measure(versions[name], root, args.streams, args.rounds))
    print(f"\n{args.streams:,} live streams, one new line each per round, {args.rounds} rounds\n")
    print("| reader | µs CPU per stream read (median) | each child |")
    print("|---|---:|---|")
    for name, values in figures.items():
        each = " ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {statistics.median(values):.1f} | {each} |")
    if args.baseline is not None:
        pairs = zip(figures["this tree"], figures["baseline"], strict=True)
        ratio = statistics.median(mine / base for mine, base in pairs)
        print(f"\nthis tree / baseline, median of the paired children: {ratio:.2f}x")
    print(f"load average (1 min) as each child began: {min(loads):.1f} to {max(loads):.1f}")


if __name__ == "__main__":
    main()

"""The reader's parse cost: ``decode`` over a real segment's chunks, against another revision.

A stream is written through the real producer (8 metric values per ``log()``, its ``run``
event first and its ``summary`` and ``finish`` last), then cut into the chunks the
reader decodes (``DEFAULT_BATCH_BYTES``, each ending at its last newline). The first
chunk is measured twice: its ``run`` event small (a clean tree, no script), and as the
producer records a script run from a dirty tree (its source and ``git diff HEAD``, here a
fixed 32 KiB of code full of braces each, beyond the depth bound). Each chunk's
``decode`` is timed in-process for this checkout's ``waddle/eventlog/record.py`` and for
the same file at ``--against`` (loaded from git), in alternating rounds so that the two
share the machine's load; the headline is the median of each round's ratio. The first
and last chunks are the mixed ones (a ``run``, ``summary`` or ``finish`` among the
metrics); the middle ones hold metrics only.

    python benchmarks/bench_decode.py --against 5c17e59      # ~20 s
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
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backlog import write_backlog

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from waddle.eventlog import record  # noqa: E402
from waddle.eventlog.reader import DEFAULT_BATCH_BYTES  # noqa: E402

Decode = Callable[[bytes, int], tuple[list[dict[str, Any]], int, list[Any]]]


def chunks_of(segment: bytes) -> list[bytes]:
    """The chunks a reader decodes: a batch's bytes from each offset, through the last
    newline."""
    chunks, position = [], 0
    while position < len(segment):
        chunk = segment[position : position + DEFAULT_BATCH_BYTES]
        chunk = chunk[: chunk.rfind(b"\n") + 1]
        chunks.append(chunk)
        position += len(chunk)
    return chunks


def with_context(chunk: bytes, code: dict[str, Any] | None, git: dict[str, Any]) -> bytes:
    """``chunk`` with its first line's ``run`` event recording ``code`` and ``git``."""
    first, rest = chunk.split(b"\n", 1)
    run = json.loads(first)
    run["context"].pop("code", None)
    run["context"].update({"git": git} if code is None else {"git": git, "code": code})
    return record.encode(run) + rest


def record_at(revision: str) -> types.ModuleType:
    """``waddle/eventlog/record.py`` as it was at ``revision``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:waddle/eventlog/record.py"],
        cwd=HERE.parent,
        check=True,
        capture_output=True,
    ).stdout
    module = types.ModuleType(f"record_{revision}")
    sys.modules[module.__name__] = module  # for its dataclass
    exec(compile(source, f"record.py@{revision}", "exec"), module.__dict__)
    return module


def seconds(decode: Decode, chunk: bytes, repeat: int) -> float:
    """The fastest of ``repeat`` decodes of ``chunk`` (the least disturbed by the load)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        decode(chunk, 0)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="a git revision of record.py")
    parser.add_argument("--events", type=int, default=16_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "bench_decode.json")
    args = parser.parse_args()
    old = record_at(args.against)
    with tempfile.TemporaryDirectory(prefix="waddle-bench-decode-") as tmp:
        root = Path(tmp)
        write_backlog(
            root,
            args.events,
            1,
            64 << 20,
            lambda rng, _: {f"m{j}": rng.random() for j in range(8)},
            "b",
        )
        (segment,) = sorted(root.glob("log/*/*.ndjson"))
        chunks = chunks_of(segment.read_bytes())
    clean = {"commit": "0" * 40, "branch": "main", "dirty": False}
    code = "".join(f"    row = {{'k{i}': [{i}, {{'v': None}}]}}\n" for i in range(2000))[: 32 << 10]
    dirty = {**clean, "dirty": True, "diff": code.replace("\n ", "\n+"), "diff_truncated": True}
    script = {"path": "train.py", "sha256": "0" * 64, "source": code, "truncated": True}
    kinds = {
        "first, small run event": with_context(chunks[0], None, clean),
        "first, run event with script and diff": with_context(chunks[0], script, dirty),
        "middle": chunks[len(chunks) // 2],
        "last": chunks[-1],
    }
    for name, chunk in kinds.items():
        new_out, old_out = record.decode(chunk, 0), old.decode(chunk, 0)
        if new_out[1:] != old_out[1:] or len(new_out[0]) != len(old_out[0]) or new_out[2]:
            sys.exit(f"the two revisions decode the {name} chunk differently")
    load = os.getloadavg()[0]
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in kinds}
    for index in range(args.rounds):
        for name, chunk in kinds.items():
            pair = [("new", record.decode), ("old", old.decode)]
            timed = {
                label: seconds(fn, chunk, args.repeat) for label, fn in pair[:: 1 - 2 * (index % 2)]
            }
            rounds[name].append(timed)
    after = os.getloadavg()[0]
    print(
        f"| chunk (events) | {args.against} us/event | this checkout us/event "
        f"| ratio old / new (median of {args.rounds} rounds) |"
    )
    print("|---|---:|---:|---:|")
    for name, chunk in kinds.items():
        events = chunk.count(b"\n")
        old_us = statistics.median(r["old"] for r in rounds[name]) / events * 1e6
        new_us = statistics.median(r["new"] for r in rounds[name]) / events * 1e6
        ratio = statistics.median(r["old"] / r["new"] for r in rounds[name])
        print(f"| {name} ({events:,}) | {old_us:.2f} | {new_us:.2f} | {ratio:.2f} |")
    print(f"load average (1 min): {load:.2f} before, {after:.2f} after, {os.cpu_count()} CPUs")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"against": args.against, "load": load, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

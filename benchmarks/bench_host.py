"""The central host's per-stream costs, each measured side by side in one run.

* ``tail``: a host tailing its own log while ``/ingest`` writes STREAMS live runs at
  RATE events/s each (``IngestLog.append_parts``, the path of ``/ingest/batch``), as
  RELAYS requests a second, each for a share of the streams (default 1: one relay
  sending every stream once a second). A consumer's reader follows the log, once told
  which streams grew (``Hints``, what ``waddle serve`` does) and once polling every
  stream (what it did before). Reported: the reader thread's CPU per wall second, and
  the p50/p99 delay from the write to the reader handing the event on.
* ``sync``: one multi-stream request of STREAMS parts (10 events each) made durable by
  one ``syncfs`` against one ``fsync`` per stream.
* ``batch``: CPU per event of the host's ingest (check and write, no HTTP) for the same
  events sent as one ``/ingest/batch`` body against one single-stream body per stream
  (each paying its fsync, as in the server).
* ``backlog``: a relay's backlog (BACKLOG events of 4 values in 4 streams, as
  ``bench_relay.py``'s; gzip bodies of 2,000 events a stream) through
  ``/ingest/batch``'s code (no HTTP) into the host's DuckDB writer following the log,
  as ``waddle serve`` wires them: once with ``/ingest`` handing its events to the
  writer (``Handoff``), once with the writer reading them back from the log (before).
  Reported: the process's CPU per event (all threads, DuckDB's too) and events/s from
  the first body to the last event committed.

    python benchmarks/bench_host.py                      # 3,000 streams, ~2 minutes
    python benchmarks/bench_host.py --streams 1000 --seconds 10
    python benchmarks/bench_host.py --only backlog       # ~1 minute
"""

from __future__ import annotations

import argparse
import gzip
import math
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from waddle.consumers.base import ConsumerThread
from waddle.consumers.duckdb.handoff import Handoff, HandoffReader
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.eventlog.reader import LogReader
from waddle.eventlog.watch import Hints
from waddle.web import ingest_log
from waddle.web.ingest import _prepare
from waddle.web.ingest_batch import take_batch
from waddle.web.ingest_log import IngestLog

TWO = {"loss": 0.5, "acc": 0.1}
# What bench_relay.py's backlog logs: four values an event.
FOUR = {"loss": 0.123456, "acc": 0.5, "lr": 1e-3, "grad_norm": 1.0}


def events_of(
    stream: str, first: int, count: int, now: float, data: dict[str, float] = TWO
) -> list[dict[str, Any]]:
    if first == 0:
        run = {"seq": 0, "ts": now, "type": "run", "run_id": stream, "project": "bench",
               "name": stream, "config": {}, "tags": [], "notes": None, "group": None,
               "job_type": None, "context": {"host": "bench"}}  # fmt: skip
        return [run, *events_of(stream, 1, count - 1, now, data)]
    return [
        {"seq": s, "ts": now, "type": "metrics", "step": s, "data": data}
        for s in range(first, first + count)
    ]


def tail(
    root: Path, streams: int, rate: int, seconds: float, hinted: bool, relays: int
) -> dict[str, float]:
    """Write ``streams`` live streams for ``seconds``; follow them with one reader."""
    hints = Hints()
    log = IngestLog(root, hints=hints)
    names = [f"{'h' if hinted else 'p'}{i:05d}" for i in range(streams)]
    reader = LogReader(root, hints=hints.subscribe() if hinted else None, notify=False)
    stop = threading.Event()
    delays: list[float] = []
    cpu: list[float] = []
    counted = threading.Event()

    def follow() -> None:
        start = None
        for batches in reader.follow({}, stop, 0.05):
            now = time.time()
            if counted.is_set():
                if start is None:
                    start = time.thread_time()
                delays.extend(now - b.events[-1]["ts"] for b in batches if b.events)
        cpu.append(time.thread_time() - (start or time.thread_time()))

    thread = threading.Thread(target=follow)
    thread.start()
    held = dict.fromkeys(names, 0)
    per_round = rate // relays or 1
    round_no = 0
    warm_rounds = 2 * relays  # every writer opened first: a one-time cost per stream
    measured_from = begin = math.inf
    while time.monotonic() - measured_from < seconds:
        if round_no == warm_rounds:
            counted.set()
            measured_from = begin = time.monotonic()
        part = names[round_no % relays :: relays]
        now = time.time()
        events = [events_of(n, held[n], per_round, now) for n in part]
        parts = [(n, e, list(map(orjson.dumps, e))) for n, e in zip(part, events, strict=True)]
        for n in part:
            held[n] += per_round
        log.append_parts(parts)  # type: ignore[arg-type]
        round_no += 1
        if counted.is_set():
            time.sleep(max(0.0, begin + (round_no - warm_rounds) / relays - time.monotonic()))
    wall = time.monotonic() - measured_from
    stop.set()
    thread.join()
    log.close()
    delays.sort()
    return {
        "cpu_per_s": cpu[0] / wall,
        "p50_ms": 1000 * delays[len(delays) // 2],
        "p99_ms": 1000 * delays[int(len(delays) * 0.99)],
        "seen": len(delays),
        "rounds": round_no,
    }


def sync(root: Path, streams: int, syncfs: bool) -> float:
    """Seconds for one request of ``streams`` parts, 10 new events each."""
    saved = ingest_log._SYNCFS
    if not syncfs:
        ingest_log._SYNCFS = None
    try:
        log = IngestLog(root)
        now = time.time()
        names = [f"s{i:05d}" for i in range(streams)]
        log.append_parts([(n, events_of(n, 0, 10, now), None) for n in names])  # type: ignore[misc]
        started = time.perf_counter()
        log.append_parts([(n, events_of(n, 10, 10, now), None) for n in names])  # type: ignore[misc]
        took = time.perf_counter() - started
        log.close()
        return took
    finally:
        ingest_log._SYNCFS = saved


def batch_cost(root: Path, streams: int, as_batch: bool) -> float:
    """CPU microseconds per event for ``streams`` open streams, 10 new events each:
    ``syncfs`` is stubbed (the batch's disk wait is ``sync``'s to show), while each
    single-stream request pays its own fsync's CPU, as it does in the server."""
    now = time.time()
    names = [f"b{i:05d}" for i in range(streams)]
    log = IngestLog(root, hints=Hints())
    saved, ingest_log._SYNCFS = ingest_log._SYNCFS, lambda fd: 0
    try:
        took = 0.0
        for first in (0, 10):  # the first request opens the writers: not counted
            bodies = {
                n: b"".join(orjson.dumps(e) + b"\n" for e in events_of(n, first, 10, now))
                for n in names
            }
            started = time.process_time()
            if as_batch:
                body = b"".join(
                    b'{"stream":"%s","events":10}\n' % n.encode() + bodies[n] for n in names
                )
                take_batch(log, body, "", 1 << 30)
            else:
                for n in names:
                    events, lines = _prepare(n, bodies[n], "", 1 << 30, True)
                    log.append(n, events, lines)
            took = time.process_time() - started
    finally:
        ingest_log._SYNCFS = saved
        log.close()
    return 1e6 * took / (10 * streams)


def backlog(root: Path, total: int, handed: bool) -> dict[str, float]:
    """Ingest ``total`` events of 4 streams while the DuckDB writer follows the log."""
    streams, per_part = 4, 2000
    hints, handoff = Hints(), Handoff()
    log = IngestLog(root, hints=hints, handoff=handoff if handed else None)
    reader_hints = hints.subscribe()
    reader = (
        HandoffReader(root, hints=reader_hints, handoff=handoff)
        if handed
        else LogReader(root, hints=reader_hints)
    )
    now = time.time()
    names = [f"k{i}" for i in range(streams)]
    bodies = []
    for first in range(0, total // streams, per_part):
        parts = []
        for n in names:
            made = events_of(n, first, per_part, now, FOUR)
            lines = b"".join(orjson.dumps(e) + b"\n" for e in made)
            parts.append(b'{"stream":"%s","events":%d}\n' % (n.encode(), per_part) + lines)
        bodies.append(gzip.compress(b"".join(parts), 1))
    events = len(bodies) * per_part * streams
    writer = DuckDBWriter(root, root / "host.duckdb", snapshot_interval=0)
    thread = ConsumerThread(writer, root, interval=0.05, reader=reader)
    thread.start()
    cursor = writer.cursor()
    started, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        take_batch(log, body, "gzip", 1 << 30)
    query = "SELECT coalesce(sum(seq + 1), 0) FROM _waddle.offsets"
    while cursor.execute(query).fetchone()[0] < events:  # type: ignore[index]
        time.sleep(0.02)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    cursor.close()
    thread.stop()
    log.close()
    return {"us_per_event": 1e6 * cpu / events, "events_per_s": events / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=10, help="events/s per stream")
    parser.add_argument("--seconds", type=float, default=15.0, help="per tail run")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--relays", type=int, default=1, help="requests a second, each a share of the streams"
    )
    parser.add_argument("--backlog", type=int, default=400_000, help="events of ``backlog``")
    parser.add_argument("--only", choices=("tail", "sync", "batch", "backlog"))
    args = parser.parse_args()
    modes = {args.only} if args.only else {"tail", "sync", "batch", "backlog"}
    results: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(args.repeat):
            for handed in (True, False) if "backlog" in modes else ():
                key = "backlog handed" if handed else "backlog read"
                results.setdefault(key, []).append(
                    backlog(Path(tmp) / f"backlog{attempt}{handed}", args.backlog, handed)
                )
            for hinted in (True, False) if "tail" in modes else ():
                root = Path(tmp) / f"tail{attempt}{hinted}"
                key = "tail hinted" if hinted else "tail polled"
                results.setdefault(key, []).append(
                    tail(root, args.streams, args.rate, args.seconds, hinted, args.relays)
                )
            for fs in (True, False) if "sync" in modes else ():
                key = "sync syncfs" if fs else "sync fsync each"
                results.setdefault(key, []).append(
                    sync(Path(tmp) / f"sync{attempt}{fs}", args.streams, fs)
                )
            for whole in (True, False) if "batch" in modes else ():
                key = "ingest batch" if whole else "ingest per stream"
                results.setdefault(key, []).append(
                    batch_cost(Path(tmp) / f"batch{attempt}{whole}", args.streams, whole)
                )
    print(f"{args.streams} streams, {args.rate} events/s each, medians of {args.repeat}")
    for mode in ("backlog handed", "backlog read"):
        if mode in results:
            cost = statistics.median(r["us_per_event"] for r in results[mode])
            rate = statistics.median(r["events_per_s"] for r in results[mode])
            print(f"  {mode:18} {cost:8.2f} us CPU per event  {rate:10,.0f} events/s")
    for mode in ("tail hinted", "tail polled"):
        if mode not in results:
            continue
        runs = results[mode]
        cpu = statistics.median(r["cpu_per_s"] for r in runs)
        p50 = statistics.median(r["p50_ms"] for r in runs)
        p99 = statistics.median(r["p99_ms"] for r in runs)
        print(f"  {mode:18} reader CPU {100 * cpu:5.1f}% of a core", end="")
        print(f"  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    for mode in ("sync syncfs", "sync fsync each"):
        if mode in results:
            print(f"  {mode:18} {1000 * statistics.median(results[mode]):8.1f} ms per request")
    for mode in ("ingest batch", "ingest per stream"):
        if mode in results:
            print(f"  {mode:18} {statistics.median(results[mode]):8.2f} us CPU per event")


if __name__ == "__main__":
    main()

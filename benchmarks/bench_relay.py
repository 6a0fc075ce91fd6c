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
and of the host, and the ratio end-to-end / floor. The last line gives each side's own
CPU per event, measured alone in this process: the relay's reading and request bodies,
and the host's ``/ingest/batch`` on the bodies the relay would send (and, of it,
parsing each line once): what a backlog costs before any waiting between the two.
Targets: 100,000 events/s end to end and at least 0.3x the floor.

``--fan-in STREAMS`` measures the other regime, many live runs, with three processes on
the machine: a generator writes STREAMS live runs (each ``--rate`` metric events per
second), ``waddle relay`` tails them into a central ``waddle serve``. After ``--warmup``
seconds, for ``--seconds`` of steady state, the latency from each event's write to the
host's tables is measured on one run in ten (tagged ``probed``): the host's ``GET /runs``
for those runs is polled every 0.25 s for each one's last step, and a step counts from
when its writing began to when the answer that first showed it arrived, so each latency
is an upper bound. "Never in tables" counts the events of every run, from one probe of
all runs after a drain. Polling every run's row instead cost the host 0.085 cores and
0.5 s per probe at 2,000 runs on a loaded VM (the probe itself slowed the host and
stretched the bound); the command prints what probing costs the host, both ways,
measured after the fleet stops. It also prints each process's CPU. Target: 3,000 runs at
10 events/s, p99 within 2 s and nothing missing. ``--trace`` runs the relay and the host
with wrappers (installed by this file, not carried by the package) that note when each
probed event passes each stage: read by the relay's round, the previous round settled,
its request sent, handed to the host's DuckDB writer, acknowledged, taken by the
writer, committed; it prints the p50/p99 of each stage and of each leg between two, and
how long the relay's round reads, the host's requests, syncs and commits take.

    python benchmarks/bench_relay.py                          # 1,000,000 events, 3 rounds
    python benchmarks/bench_relay.py --events 200000 --rounds 1   # smoke test, ~30 s
    python benchmarks/bench_relay.py --fan-in 3000 --rate 10  # ~100 s
    python benchmarks/bench_relay.py --fan-in 3000 --trace    # where the latency goes
    python benchmarks/bench_relay.py --fan-in 1000 --seconds 30 --baseline DIR  # ~80 s
    python benchmarks/bench_relay.py --round-cost 3000 --baseline DIR  # ~3 min

``--baseline DIR`` runs a second relay, another version's ``waddle`` package (DIR holds
it, e.g. ``git archive REV waddle | tar -x -C DIR``), beside this one over the same
streams to the same host, and prints both relays' CPU: a ratio that holds on a loaded
machine. ``--round-cost STREAMS`` measures the relay alone, in CPU seconds (which hold
better than wall time on a loaded machine): STREAMS live streams grow by ``--rate``
events before each of ``--live-rounds`` rounds, and a round is read (the shared read
path), then packed, sent to a ``waddle serve`` and committed by a ``RelayConsumer``; it
prints both per stream per round, with ``--baseline`` for that version too.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from backlog import write_backlog

TARGET_EVENTS_S = 100_000
TARGET_RATIO = 0.3
TARGET_P99_S = 2.0
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
    relay = RelayConsumer(root, url, linger=0.0)  # as `waddle sync` and `--once` run it
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


def relay_cost(root: Path, rounds: int = 3) -> dict[str, float]:
    """The relay's own CPU per event, side by side in one process, medians of ``rounds``:
    reading the log, then making the request bodies (gzip level 1) either from the lines
    as the log holds them (what the relay does) or by encoding the events again."""
    import gzip

    from waddle.consumers.relay.consumer import log_lines
    from waddle.eventlog.reader import LogReader, Offset
    from waddle.eventlog.record import encode

    timings: dict[str, list[float]] = {"read": [], "as held": [], "encoded": []}
    logs = str(root / "log")
    for _ in range(rounds):
        reader, spent, events = LogReader(root), dict.fromkeys(timings, 0.0), 0
        for stream in reader.streams():
            offset = Offset()
            while True:
                began = time.process_time()
                batch = reader.read(stream, offset)
                spent["read"] += time.process_time() - began
                if not batch.events:
                    break
                began = time.process_time()
                gzip.compress(log_lines(logs, batch, offset, batch.events) or b"", 1, mtime=0)
                spent["as held"] += time.process_time() - began
                began = time.process_time()
                gzip.compress(b"".join(map(encode, batch.events)), 1, mtime=0)
                spent["encoded"] += time.process_time() - began
                events += len(batch.events)
                offset = batch.offset
        for name, seconds in spent.items():
            timings[name].append(seconds / events * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


def host_cost(root: Path, rounds: int = 3, body_bytes: int = 4 << 20) -> dict[str, float]:
    """The host's own CPU per event for the backlog's requests, in one process, medians
    of ``rounds``: parsing the lines alone (``loads_lines``, as the host parses them: the
    least a host that checks every event must do), and all of ``/ingest/batch``'s work on bodies of
    ``body_bytes`` as the relay packs them, a part per stream (``take_batch``: frame,
    parse, check, write and sync into a fresh log; no hand-off, no DuckDB)."""
    from waddle.consumers.relay.client import part_header
    from waddle.eventlog.record import loads_lines
    from waddle.eventlog.segment import list_segments, log_dir, segment_name
    from waddle.web.ingest_batch import take_batch
    from waddle.web.ingest_log import IngestLog

    streams = {
        path.name: [
            line
            for first in list_segments(path)
            for line in (path / segment_name(first)).read_bytes().splitlines()
        ]
        for path in sorted(log_dir(root).iterdir())
    }
    events = sum(map(len, streams.values()))
    line_bytes = sum(len(line) + 1 for lines in streams.values() for line in lines) / events
    per_part = max(1, int(body_bytes / len(streams) / line_bytes))
    bodies = []
    for start in range(0, max(map(len, streams.values())), per_part):
        parts = [(name, lines[start : start + per_part]) for name, lines in streams.items()]
        bodies.append(
            b"".join(
                part_header(name, len(chunk)) + b"\n".join(chunk) + b"\n"
                for name, chunk in parts
                if chunk
            )
        )
    timings: dict[str, list[float]] = {"parse": [], "ingest": []}
    for _ in range(rounds):
        began = time.process_time()
        for lines in streams.values():
            for start in range(0, len(lines), per_part):  # a part at a time, as the host
                loads_lines(lines[start : start + per_part])
        timings["parse"].append((time.process_time() - began) / events * 1e6)
        with tempfile.TemporaryDirectory(prefix="waddle-bench-ingest-") as tmp:
            log = IngestLog(Path(tmp))
            began = time.process_time()
            for body in bodies:
                answer = take_batch(log, body, "", len(body))
                assert all(part["status"] == 200 for part in answer["streams"]), answer
            timings["ingest"].append((time.process_time() - began) / events * 1e6)
            log.close()
    return {name: statistics.median(values) for name, values in timings.items()}


def child_rounds(root: Path, url: str, streams: int, rounds: int, events: int) -> dict[str, float]:
    """The relay's CPU per live stream per round, in this process, to a host in another:
    ``streams`` streams each grow by ``events`` metric events before each of ``rounds``
    rounds (written outside the clock); a round reads each stream once (``read``), then
    the relay packs, sends and commits it (``relay``: its sending threads included)."""
    from waddle.consumers.relay import consumer as relay_module
    from waddle.consumers.relay.consumer import RelayConsumer
    from waddle.eventlog.reader import LogReader, Offset
    from waddle.eventlog.segment import log_dir
    from waddle.eventlog.writer import StreamWriter

    names = [f"live{i:05d}" for i in range(streams)]
    writers = [StreamWriter(log_dir(root) / name) for name in names]
    for name, writer in zip(names, writers, strict=True):
        writer.append("run", {"run_id": name, "project": FLEET_PROJECT, "name": "p",
                              "config": {}, "tags": [], "notes": None, "group": None,
                              "job_type": None, "context": {"host": "bench"}})  # fmt: skip
    relay, reader = RelayConsumer(root, url, linger=0), LogReader(root)
    relay.start({})
    # The collector as ``waddle relay`` runs it (a version without the setting: as it ran).
    collector = getattr(relay_module, "rare_collections", contextlib.nullcontext)
    offsets = dict.fromkeys(names, Offset())
    spent = {"read": 0.0, "relay": 0.0}
    with collector():
        for index in range(rounds + 1):
            for step, writer in enumerate(writers * events):
                writer.append("metrics", {"step": index * events + step // streams,
                                          "data": {"loss": 0.5, "acc": 0.5, "lr": 1e-3,
                                                   "grad_norm": 1.0}})  # fmt: skip
            began = time.process_time()
            batches = [reader.read(name, offsets[name]) for name in names]
            read = time.process_time()
            relay.handle(batches)
            committed = relay.commit()
            if index:  # the first round creates the runs on the host: not a live round
                spent["read"] += read - began
                spent["relay"] += time.process_time() - read
            offsets = {name: committed[name] for name in names}
    relay.close()
    for writer in writers:
        writer.close()
    assert relay.failure is None and not relay.parked, (relay.failure, relay.parked)
    per = streams * rounds
    return {"read_us": spent["read"] / per * 1e6, "relay_us": spent["relay"] / per * 1e6}


def round_cost(
    scratch: Path, streams: int, rounds: int, events: int, baseline: Path | None
) -> dict[str, dict[str, float]]:
    """``child_rounds`` against a fresh ``waddle serve``, for this version and, with
    ``baseline``, for that one too (one after the other, each in a fresh process)."""
    results: dict[str, dict[str, float]] = {}
    versions = {"this": None, "baseline": baseline} if baseline else {"this": None}
    for label, version in versions.items():
        host, url = start_host(scratch / f"rounds-host-{label}")
        try:
            args = [str(scratch / f"rounds-{label}"), url, str(streams), str(rounds)]
            results[label] = child("rounds", *args, str(events), version=version)
        finally:
            host.terminate()
            host.wait(60)
            if host.stdout is not None:
                host.stdout.close()
    return results


def start_host(
    root: Path, *extra: str, trace: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    command = [*waddle_command(trace, "serve"), "--dir", str(root), *extra]
    env = {k: v for k, v in versioned(None).items() if not k.startswith("WADDLE_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [*command, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if b" at http://" in line:
            return proc, line.decode().rsplit(" at ", 1)[1].strip().split("?")[0].rstrip("/")
    raise RuntimeError("waddle serve printed no URL")


def waddle_command(trace: Path | None, kind: str) -> list[str]:
    """The command line of ``waddle KIND``, traced into ``trace`` if given (``child_traced``)."""
    if trace is None:
        return [sys.executable, "-m", "waddle", kind]
    return [sys.executable, __file__, "--child", "traced", kind, str(trace)]


def child(*args: str, version: Path | None = None) -> dict[str, float]:
    """Run ``--child ARGS`` in a fresh process; ``version``: a folder holding the ``waddle``
    package to import instead of this one."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        check=True,
        capture_output=True,
        text=True,
        env=versioned(version),
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def versioned(version: Path | None) -> dict[str, str]:
    """The environment of a child that imports ``waddle`` from ``version`` (else from here)."""
    path = [str(version)] if version else []
    path += [str(HERE.parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}


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


FLEET_PROJECT = "fleet"
SAMPLE_S = 0.25
# Latency is measured on one run in this many (tagged ``probed``), spread over the order
# in which the relay packs them: probing all 3,000 runs' rows every 0.25 s cost the host
# 0.085 cores and took 0.5 s per probe on a loaded VM, both skewing what it measured.
PROBED_ONE_IN = 10
PROBE_TAG = "probed"
DRAIN_S = 5.0
PROBE_CHECK_S = 5.0


def child_generate(root: Path, streams: int, rate: float, seconds: float, out: Path) -> None:
    """The fleet: ``streams`` live runs, each logging ``rate`` metric events per second, for
    ``seconds``; writes when each step began (a step is one event of every stream)."""
    from waddle.eventlog.segment import log_dir
    from waddle.eventlog.writer import StreamWriter

    writers = [StreamWriter(log_dir(root) / f"proc{i:05d}") for i in range(streams)]
    for i, writer in enumerate(writers):
        writer.append("run", {"run_id": f"proc{i:05d}", "project": FLEET_PROJECT, "name": "p",
                              "config": {}, "notes": None, "group": None,
                              "tags": [PROBE_TAG] if i % PROBED_ONE_IN == 0 else [],
                              "job_type": None, "context": {"host": "bench"}})  # fmt: skip
    began: list[float] = []
    started = time.time()
    while time.time() - started < seconds:
        step = len(began)
        began.append(time.time())
        data = {"loss": 1 / (step + 1), "acc": 0.5, "lr": 1e-3, "grad_norm": 1.0}
        for writer in writers:
            writer.append("metrics", {"step": step, "data": data})
        time.sleep(max(0.0, started + (step + 1) / rate - time.time()))
    for writer in writers:
        writer.close()
    out.write_text(json.dumps(began))


def sample_tables(
    url: str, seen: dict[str, list[tuple[float, int]]], tag: str | None = PROBE_TAG
) -> None:
    """Note each run's last step in the host's tables (``GET /runs``; only the runs tagged
    ``tag``, unless None), stamped with the time the answer arrived (so a latency measured
    from it is an upper bound)."""
    import urllib.request

    which = f"project={FLEET_PROJECT}&limit=10000" + (f"&tag={tag}" if tag else "")
    with urllib.request.urlopen(f"{url}/runs?{which}") as answer:
        rows = json.loads(answer.read())["runs"]
    now = time.time()
    for row in rows:
        step = row.get("last_step")
        marks = seen.setdefault(row["run_id"], [])
        if step is not None and (not marks or marks[-1][1] < step):
            marks.append((now, step))


def latencies(
    seen: dict[str, list[tuple[float, int]]], began: list[float], window: tuple[float, float]
) -> tuple[list[float], int]:
    """Event-to-table latency of every event written within ``window``, and how many of
    them never reached the tables."""
    import bisect

    steps = [step for step, at in enumerate(began) if window[0] <= at < window[1]]
    found: list[float] = []
    missing = 0
    for marks in seen.values():
        reached = [step for _, step in marks]
        for step in steps:
            index = bisect.bisect_left(reached, step)
            if index == len(marks):
                missing += 1
            else:
                found.append(marks[index][0] - began[step])
    return found, missing


TRACE_STAGES = ("read", "settled", "sent", "handed", "acked", "taken", "committed")


def child_traced(kind: str, trace: Path, argv: list[str]) -> int:
    """``waddle relay`` or ``waddle serve`` (``kind``) with ARGV, noting when each event
    of a probed run passes each stage (``TRACE_STAGES``) into ``trace``: lines of
    ``[stage, stream, last seq, time]``. Wrappers around the stages' functions, installed
    here, so the package itself carries no tracing."""
    import atexit

    from waddle.cli.parser import main as waddle_main

    notes: list[tuple[str, str, int, float]] = []
    sink = trace.open("a")

    def note(stage: str, stream: str, seq: int) -> None:
        if int(stream[4:]) % PROBED_ONE_IN == 0:
            notes.append((stage, stream, seq, time.time()))
            if len(notes) >= 2000:
                flush()

    def flush() -> None:
        sink.write("".join(json.dumps(n) + "\n" for n in notes))
        sink.flush()
        notes.clear()

    def timed(owner: object, name: str) -> None:
        """Note how long each call of ``owner.name`` takes (its start and its seconds)."""
        inner = getattr(owner, name)
        label = f"{kind}: {getattr(owner, '__name__', owner)}.{name}"

        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            began = time.time()
            try:
                return inner(*args, **kwargs)
            finally:
                notes.append(("call", label, time.time() - began, began))  # type: ignore[arg-type]

        setattr(owner, name, call)

    def wrap(owner: type, name: str, before: Callable | None, after: Callable | None) -> None:
        inner = getattr(owner, name)

        def traced(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if before is not None:
                before(self, *args)
            result = inner(self, *args, **kwargs)
            if after is not None:
                after(self, result, *args)
            return result

        setattr(owner, name, traced)

    if kind == "relay":
        from waddle.consumers.relay.consumer import RelayConsumer

        def read(self, batches):  # type: ignore[no-untyped-def]
            for batch in batches:
                if batch.events and batch.stream.startswith("proc"):
                    note("read", batch.stream, batch.events[-1]["seq"])

        def sent(self, request):  # type: ignore[no-untyped-def]
            for part, _ in request:
                note("sent", part.stream, part.events[-1]["seq"])

        def acked(self, result, request):  # type: ignore[no-untyped-def]
            for part, _ in request:
                note("acked", part.stream, part.events[-1]["seq"])

        def settled(self, batches):  # type: ignore[no-untyped-def]
            for batch in batches:
                if batch.events and batch.stream.startswith("proc"):
                    note("settled", batch.stream, batch.events[-1]["seq"])

        wrap(RelayConsumer, "handle", read, None)
        wrap(
            RelayConsumer, "_live", settled, None
        )  # what ``handle`` does once the last round landed
        wrap(RelayConsumer, "_deliver", sent, acked)
    else:
        from waddle.consumers.duckdb.handoff import Handoff
        from waddle.consumers.duckdb.writer import DuckDBWriter

        def handed(self, parts):  # type: ignore[no-untyped-def]
            for stream, _, end, _ in parts:
                note("handed", stream, end.seq)

        def taken(self, batches):  # type: ignore[no-untyped-def]
            for batch in batches:
                if batch.events and batch.stream.startswith("proc"):
                    note("taken", batch.stream, batch.events[-1]["seq"])

        def committed(self, result):  # type: ignore[no-untyped-def]
            for stream, offset in result.items():
                if stream.startswith("proc") and self._traced.get(stream) != offset.seq:
                    self._traced[stream] = offset.seq
                    note("committed", stream, offset.seq)

        DuckDBWriter._traced = {}  # type: ignore[attr-defined]
        wrap(Handoff, "give", handed, None)
        wrap(DuckDBWriter, "handle", taken, None)
        wrap(DuckDBWriter, "commit", None, committed)
    from waddle.eventlog.reader import LogReader

    timed(LogReader, "poll")
    if kind == "relay":
        from waddle.consumers.relay.sender import Sender

        timed(RelayConsumer, "_settle")
        timed(RelayConsumer, "handle")
        timed(Sender, "send_parts")
    else:
        from waddle.web import ingest_batch, ingest_log

        timed(ingest_batch, "take_batch")
        timed(ingest_log, "durable")
        timed(DuckDBWriter, "handle")
        timed(DuckDBWriter, "commit")
    atexit.register(flush)
    return waddle_main([kind, *argv])


def stage_latencies(
    traces: list[Path],
    seen: dict[str, list[tuple[float, int]]],
    began: list[float],
    window: tuple[float, float],
) -> dict[str, list[float]]:
    """For each probed event written within ``window``: how long after its writing began
    it passed each stage (``TRACE_STAGES``, then ``seen`` by the probe), and each leg
    between two stages in a row (events that missed a stage are left out of its legs)."""
    import bisect

    marks: dict[tuple[str, str], list[tuple[float, int]]] = {}
    calls: dict[str, list[float]] = {}
    for trace in traces:
        for line in trace.read_text().splitlines() if trace.exists() else []:
            stage, stream, seq, at = json.loads(line)
            if stage == "call":
                if window[0] <= at < window[1]:
                    calls.setdefault(stream, []).append(seq)
                continue
            marks.setdefault((stage, stream), []).append((at, seq - 1))  # seq 0: the run
    marks.update({("seen", stream): found for stream, found in seen.items()})
    steps = [step for step, at in enumerate(began) if window[0] <= at < window[1]]
    stages = (*TRACE_STAGES, "seen")
    found: dict[str, list[float]] = {f"-> {stage}": [] for stage in stages}
    found.update({f"{a} -> {b}": [] for a, b in itertools.pairwise(stages)})
    for stream in seen:
        passed: dict[str, list[float | None]] = {}
        for stage in stages:
            times, reached, top = [], [], -1
            for at, step in sorted(marks.get((stage, stream), [])):
                if step > top:  # the first time each step was passed
                    top = step
                    times.append(at)
                    reached.append(step)
            where = [bisect.bisect_left(reached, step) for step in steps]
            passed[stage] = [times[i] if i < len(times) else None for i in where]
        for index, step in enumerate(steps):
            for stage in stages:
                at = passed[stage][index]
                if at is not None:
                    found[f"-> {stage}"].append(at - began[step])
            for a, b in itertools.pairwise(stages):
                first, then = passed[a][index], passed[b][index]
                if first is not None and then is not None:
                    found[f"{a} -> {b}"].append(then - first)
    found.update({f"call {label}": spent for label, spent in sorted(calls.items())})
    return found


def fan_in(
    scratch: Path,
    streams: int,
    rate: float,
    seconds: float,
    warmup: float,
    host_args: list[str],
    baseline: Path | None = None,
    trace: bool = False,
) -> dict[str, float]:
    """Live streams through a relay process into a host process, written by a third:
    event-to-table latency over the steady state, and each process's CPU. ``baseline``:
    a folder holding another version's ``waddle`` package, run as a second relay of the
    same streams to the same host beside this one (its URL names the host ``localhost``,
    so it keeps offsets of its own; the host acknowledges what the other one sent).
    ``trace``: also note when each probed event passes each stage (``child_traced``)."""
    root, host_root = scratch / "fleet", scratch / "fleet-host"
    schedule = scratch / "began.json"
    traces = {
        kind: scratch / f"trace-{kind}.ndjson" if trace else None for kind in ("relay", "serve")
    }
    host, url = start_host(host_root, *host_args, trace=traces["serve"])
    procs: dict[str, subprocess.Popen[bytes]] = {"host": host}
    seen: dict[str, list[tuple[float, int]]] = {}
    probes = [0]

    def sample_until(done: Callable[[], bool], every: float = SAMPLE_S) -> None:
        while not done():
            sample_tables(url, seen)
            probes[0] += 1
            time.sleep(every)

    try:
        args = [str(root), str(streams), str(rate), str(warmup + seconds), str(schedule)]
        generator = procs["generator"] = subprocess.Popen(
            [sys.executable, __file__, "--child", "generate", *args], env=versioned(None)
        )
        while not (log_dir_of(root)).is_dir():
            time.sleep(0.05)
        procs["relay"] = subprocess.Popen(
            [*waddle_command(traces["relay"], "relay"), url, "--dir", str(root)],
            stderr=subprocess.DEVNULL,
            env=versioned(None),
        )
        if baseline is not None:
            other = url.replace("127.0.0.1", "localhost")
            procs["baseline"] = subprocess.Popen(
                [sys.executable, "-m", "waddle", "relay", other, "--dir", str(root)],
                stderr=subprocess.DEVNULL,
                env=versioned(baseline),
                cwd=baseline,  # ``-m`` puts the working folder first on the path
            )
        started = time.time()
        sample_until(lambda: time.time() - started >= warmup or generator.poll() is not None)
        before = {name: cpu_seconds(psutil.Process(p.pid)) for name, p in procs.items()}
        window_start, probes[0] = time.time(), 0
        after = dict(before)

        def generated() -> bool:
            if generator.poll() is not None:
                return True
            after["generator"] = cpu_seconds(psutil.Process(generator.pid))
            return False

        sample_until(generated)
        elapsed = time.time() - window_start
        interval = elapsed / max(probes[0], 1)
        for name in procs.keys() - {"generator"}:
            after[name] = cpu_seconds(psutil.Process(procs[name].pid))
        used = {name: after[name] - before[name] for name in procs}
        drained = time.time() + DRAIN_S
        sample_until(lambda: time.time() >= drained)
        final: dict[str, list[tuple[float, int]]] = {}
        sample_tables(url, final, tag=None)
        if caught_up(url, streams, len(json.loads(schedule.read_text())) - 1):
            probe_cpu = probe_cost(host, lambda: sample_tables(url, {}))
            probe_all_cpu = probe_cost(host, lambda: sample_tables(url, {}, tag=None))
        else:
            probe_cpu = probe_all_cpu = math.nan
    finally:
        for name, proc in procs.items():
            if name != "generator":
                proc.terminate()
            proc.wait(60)
        if host.stdout is not None:
            host.stdout.close()
    began = json.loads(schedule.read_text())
    window = (began[0] + warmup, began[0] + warmup + seconds)
    found, unseen = latencies(seen, began, window)
    stages = stage_latencies([t for t in traces.values() if t], seen, began, window)
    found.sort()
    count = len(found) + unseen
    every = {f"proc{i:05d}": final.get(f"proc{i:05d}", [(0.0, -1)])[-1][1] for i in range(streams)}
    missing = sum(1 for step, at in enumerate(began) if window[0] <= at < window[1]
                  for last in every.values() if last < step)  # fmt: skip
    return {
        "streams": streams,
        "rate": rate,
        "seconds": seconds,
        "events_s": streams * sum(1 for at in began if at >= began[0] + warmup) / seconds,
        "p50_s": found[len(found) // 2] if found else math.inf,
        "p99_s": found[int(count * 0.99)] if int(count * 0.99) < len(found) else math.inf,
        "max_s": found[-1] if found else math.inf,
        "missing": float(missing),
        "probe_interval_s": interval,
        "probe_cpu": probe_cpu,
        "probe_all_cpu": probe_all_cpu,
        **{f"{name}_cpu": used[name] / elapsed for name in procs},
        **({"stages": {k: quantiles(v) for k, v in stages.items()}} if trace else {}),
    }


def quantiles(values: list[float]) -> dict[str, float]:
    """p50, p99 and how many of ``values``."""
    values = sorted(values)
    if not values:
        return {"p50": math.nan, "p99": math.nan, "count": 0, "sum": 0.0}
    return {"p50": values[len(values) // 2], "p99": values[int(len(values) * 0.99)],
            "count": len(values), "sum": sum(values)}  # fmt: skip


def caught_up(url: str, streams: int, step: int, timeout: float = 60.0) -> bool:
    """Whether every run's ``step`` reaches the host's tables within ``timeout`` (so that
    the host is idle when what a probe costs it is measured)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows: dict[str, list[tuple[float, int]]] = {}
        sample_tables(url, rows, tag=None)
        if len(rows) == streams and all(marks and marks[-1][1] >= step for marks in rows.values()):
            return True
        time.sleep(1.0)
    return False


def probe_cost(host: subprocess.Popen[bytes], probe: Callable[[], None]) -> float:
    """The host's CPU (cores) that probing its tables every ``SAMPLE_S`` costs, measured
    once the fleet has stopped: the host's CPU while probed less its CPU while not."""
    process = psutil.Process(host.pid)
    used = {}
    for probed in (False, True):
        cpu, began = cpu_seconds(process), time.time()
        while time.time() - began < PROBE_CHECK_S:
            if probed:
                probe()
            time.sleep(SAMPLE_S)
        used[probed] = (cpu_seconds(process) - cpu) / (time.time() - began)
    return used[True] - used[False]


def log_dir_of(root: Path) -> Path:
    from waddle.eventlog.segment import log_dir

    return log_dir(root)


def main() -> int:
    # Relay and host share this machine: plain bodies, as such a user is told to run it
    # (docs/relay.md); ``WADDLE_RELAY_GZIP=1 python benchmarks/bench_relay.py`` measures gzip.
    os.environ.setdefault("WADDLE_RELAY_GZIP", "0")
    if sys.argv[1:3] == ["--child", "traced"]:  # its arguments are waddle's own
        return child_traced(sys.argv[3], Path(sys.argv[4]), sys.argv[5:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--segment-bytes", type=int, default=8 << 20)
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--fan-in", type=int, metavar="STREAMS", help="measure live streams")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s per stream")
    parser.add_argument("--seconds", type=float, default=60.0, help="steady state measured")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before it")
    parser.add_argument(
        "--host-args", default="", help="extra `waddle serve` arguments, e.g. '--poll-interval 0.5'"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="with --fan-in: a folder holding another version's waddle package (e.g. from "
        "`git archive REV waddle | tar -x -C DIR`), relayed beside this one: CPU side by side",
    )
    parser.add_argument(
        "--round-cost",
        type=int,
        metavar="STREAMS",
        help="the relay's CPU per live stream per round (--rate events each), in one process",
    )
    parser.add_argument("--live-rounds", type=int, default=20, help="rounds for --round-cost")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="with --fan-in: when probed events pass each stage, relay to host's tables",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "generate":
            root, streams, rate, seconds, out = rest
            child_generate(Path(root), int(streams), float(rate), float(seconds), Path(out))
            return 0
        if kind == "floor":
            result = child_floor(Path(rest[0]), Path(rest[1]))
        elif kind == "rounds":
            root, url, streams, rounds, events = rest
            result = child_rounds(Path(root), url, int(streams), int(rounds), int(events))
        else:
            result = child_relay(Path(rest[0]), rest[1], Path(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return 0
    if args.round_cost:
        with tempfile.TemporaryDirectory(prefix="waddle-bench-rounds-") as tmp:
            costs = round_cost(
                Path(tmp), args.round_cost, args.live_rounds, int(args.rate), args.baseline
            )
        report_round_cost(costs, args.round_cost, int(args.rate))
        return 0
    if args.fan_in:
        with tempfile.TemporaryDirectory(prefix="waddle-bench-fanin-") as tmp:
            result = fan_in(
                Path(tmp),
                args.fan_in,
                args.rate,
                args.seconds,
                args.warmup,
                args.host_args.split(),
                args.baseline,
                args.trace,
            )
        report_fan_in(result)
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
        cost = relay_cost(root)
        host = host_cost(root)
    report(rounds, events)
    print(
        f"\nthe relay's own CPU per event (one process, medians of 3): reading the log "
        f"{cost['read']:.2f} us; request bodies from the lines as the log holds them "
        f"{cost['as held']:.2f} us, by encoding the events again {cost['encoded']:.2f} us "
        f"({cost['encoded'] / cost['as held']:.1f}x); the host's /ingest/batch (frame, parse, "
        f"check, write, sync; 4 MiB bodies) {host['ingest']:.2f} us, of which parsing each line "
        f"once takes {host['parse']:.2f} us; load average {os.getloadavg()[0]:.2f}"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"events": events, "rounds": rounds}, indent=2))
    return 0


def report_fan_in(result: dict[str, float]) -> None:
    print(
        f"load average {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; event to table, over "
        f"{result['seconds']:g} s of steady state (an upper bound: the host's tables probed "
        f"every {result['probe_interval_s']:.2f} s on one run in {PROBED_ONE_IN}; probing "
        f"every {SAMPLE_S:g} s costs the host {result['probe_cpu']:.3f} cores, "
        f"{result['probe_all_cpu']:.3f} for every run's row, measured after)\n"
    )
    print(
        "| live runs | events/s | p50 | p99 | max | never in tables | host CPU | relay CPU "
        "| generator CPU |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {result['streams']:,} | {result['events_s']:,.0f} | {result['p50_s']:.2f} s | "
        f"{result['p99_s']:.2f} s | {result['max_s']:.2f} s | {result['missing']:,.0f} | "
        f"{result['host_cpu']:.2f} | {result['relay_cpu']:.2f} | {result['generator_cpu']:.2f} |"
    )
    if "baseline_cpu" in result:
        print(
            f"\nrelay CPU beside the baseline relay (same streams, same host, same time): "
            f"{result['relay_cpu']:.3f} against {result['baseline_cpu']:.3f} cores "
            f"({result['baseline_cpu'] / max(result['relay_cpu'], 1e-9):.1f}x less); the "
            "latency above is of whichever relay delivered first"
        )
    if "stages" in result:
        print("\n| probed events, from their writing to; calls | p50 | p99 | count | sum |")
        print("|---|---:|---:|---:|---:|")
        for stage, q in result["stages"].items():
            print(
                f"| {stage} | {q['p50']:.3f} s | {q['p99']:.3f} s | {q['count']:,} "
                f"| {q['sum']:.1f} s |"
            )
    met = result["p99_s"] <= TARGET_P99_S and result["missing"] == 0
    print(f"\ntarget p99 <= {TARGET_P99_S:g} s, nothing missing: {'met' if met else 'NOT met'}")


def report_round_cost(costs: dict[str, dict[str, float]], streams: int, events: int) -> None:
    print(
        f"CPU per live stream per round ({streams:,} streams, {events} events each a round; "
        f"load average {os.getloadavg()[0]:.2f}):\n\n| relay | reading | packing, sending, "
        "committing | together |\n|---|---:|---:|---:|"
    )
    for label, cost in costs.items():
        together = cost["read_us"] + cost["relay_us"]
        print(
            f"| {label} | {cost['read_us']:.0f} us | {cost['relay_us']:.0f} us "
            f"| {together:.0f} us |"
        )
    if "baseline" in costs:
        ratio = costs["baseline"]["relay_us"] / max(costs["this"]["relay_us"], 1e-9)
        print(f"\npacking, sending, committing: {ratio:.2f}x less than the baseline")


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
    gzip = "gzip" if all(r["relay"]["gzip"] for r in rounds) else "plain (WADDLE_RELAY_GZIP=0)"
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

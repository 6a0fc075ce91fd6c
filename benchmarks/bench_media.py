"""Media in run.log() against the floor it cannot beat, and against wandb and Trackio.

Images: ``run.log({"img": waddle.Image(pixels)})`` against encoding the same pixels as
PNG alone with the same encoder (Pillow when installed, else Waddle's stdlib writer):
what any tracker must do at least; and against encoding plus writing the PNG to a new
file, what any tracker that keeps a file per image pays. Every call gets pixels of its
own (a smooth gradient plus noise, so zlib has work to do), so no blob is ever found
already stored. Each call is timed on its own and the three alternate call by call, so
load on a shared machine hits them alike; per round the median call, the mean (which
keeps rare costs: folders made, the log rolling over) and the median CPU time of the
calling thread (user + system, which waiting for a core does not inflate), then the
median of the rounds.
The run's one ``os.sync`` at finish is timed on its own. Histograms: ``log()`` of a
64-bin histogram against ``log()`` of one scalar.

Peers: Waddle, wandb (offline) and Trackio (local), each round in a fresh process per
tracker, interleaved (waddle, wandb, trackio, waddle, ...): the same 64x64 images (one
``Image`` per step; the first, which pays lazy imports, timed on its own), then one
``Histogram`` of 10,000 values per step, then ten logs of a 100-row ``Table`` (the
same rows: a content-addressed store finds it stored), then ten tables whose rows
differ (each one a new file), through each tracker's own classes. Reported: the process
from start to exit (the wait for any service process it started included), and inside
it import, init, each loop and finish. A peer that is not installed is named and
skipped; install the peers in a separate environment and run this script with its
Python:

    python3 -m venv /work/venv-bench
    /work/venv-bench/bin/pip install -e . wandb trackio numpy pillow
    /work/venv-bench/bin/python benchmarks/bench_media.py [--images 500] [--rounds 5]
        [--peer-images 200] [--peer-rounds 3] [--peers waddle,wandb,trackio]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
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

import numpy as np
import psutil
from peers.trackers import OFFLINE_ENV, tracker

SIZES = (64, 512)
PEERS = ("waddle", "wandb", "trackio")
PEER_PHASES = (
    "import",
    "init",
    "first image",
    "images",
    "histograms",
    "tables",
    "new tables",
    "finish",
)
HISTOGRAM_VALUES = 10_000
TABLE_ROWS, TABLES = 100, 10
WORKER_TIMEOUT_S = 600


def pixels(size: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` distinct RGB images: a gradient plus noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype=np.float64)
    base = (ramp[:, None, None] + ramp[None, :, None] / 2) * np.ones((1, 1, 3))
    return [
        np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8) for _ in range(count)
    ]


def per_call(call: Callable[[Any], object], items: list[Any]) -> float:
    """Mean seconds per call over ``items``."""
    start = time.perf_counter()
    for item in items:
        call(item)
    return (time.perf_counter() - start) / len(items)


def encode_and_write(folder: Path) -> Callable[[np.ndarray], None]:
    """Encode, then write the PNG to a new file of its own: what a tracker that keeps
    each image as a file (wandb, Waddle) cannot avoid either."""
    from waddle.producer.media.png import encode_png

    serial = iter(range(1 << 30))
    folder.mkdir()

    def call(image: np.ndarray) -> None:
        (folder / f"{next(serial)}.png").write_bytes(encode_png(image))

    return call


def image_rounds(size: int, count: int, rounds: int, tmp: Path) -> dict[str, float]:
    """Seconds per image of the floor, encode + file and ``run.log``, each call timed on
    its own and the three interleaved call by call (load on a shared machine hits each
    alike); per round the median call, the mean and the median CPU time of the calling
    thread (user + system: what load on other cores does not inflate), then the median
    over rounds."""
    import waddle
    from waddle.producer.media.png import encode_png

    kinds = ("floor", "file", "log")
    stats = ("median", "mean", "cpu")
    found: dict[str, list[float]] = {f"{k} {s}": [] for k in kinds for s in stats}
    found["finish"] = []
    clock, cpu = time.perf_counter, time.thread_time
    for index in range(rounds):
        run = waddle.init(project="bench", root=tmp / f"{size}-{index}", system_metrics=False)
        calls = {
            "floor": encode_png,
            "file": encode_and_write(tmp / f"files-{size}-{index}"),
            "log": lambda a, run=run: run.log({"img": waddle.Image(a)}),
        }
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        cpu_times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for triple in zip(
            *(pixels(size, count, seed=3 * index + k) for k in range(3)), strict=True
        ):
            for kind, picture in zip(kinds, triple, strict=True):  # new pixels for every call
                start, start_cpu = clock(), cpu()
                calls[kind](picture)
                times[kind].append(clock() - start)
                cpu_times[kind].append(cpu() - start_cpu)
        for kind in kinds:
            found[f"{kind} median"].append(statistics.median(times[kind]))
            found[f"{kind} mean"].append(statistics.fmean(times[kind]))
            found[f"{kind} cpu"].append(statistics.median(cpu_times[kind]))
        start = clock()
        run.finish()
        found["finish"].append(clock() - start)
    return {key: statistics.median(values) for key, values in found.items()}


def histogram_rounds(calls: int, rounds: int, tmp: Path) -> dict[str, float]:
    import waddle

    values = np.random.default_rng(0).normal(size=10_000)
    prebuilt = waddle.Histogram(values)
    scalar, histogram, build = [], [], []
    for index in range(rounds):
        run = waddle.init(project="bench", root=tmp / f"h-{index}", system_metrics=False)
        scalar.append(per_call(lambda i, run=run: run.log({"x": 0.5}), list(range(calls))))
        histogram.append(per_call(lambda i, run=run: run.log({"h": prebuilt}), list(range(calls))))
        build.append(per_call(lambda i: waddle.Histogram(values), list(range(calls // 10))))
        run.finish()
    return {
        "scalar": statistics.median(scalar),
        "histogram": statistics.median(histogram),
        "build": statistics.median(build),
    }


def against_the_floor(images: int, rounds: int) -> None:
    """Images and histograms in this process, each against what it cannot beat.
    (Waddle is imported by the functions that use it: a peer worker times its import.)"""
    from waddle.producer.media.png import pillow

    encoder = "Pillow" if pillow() else "stdlib zlib writer (Pillow not installed)"
    print(f"PNG encoder: {encoder}; medians over {rounds} rounds")
    columns = ("µs median", "µs mean", "/floor med", "/floor mean", "CPU µs med", "/floor CPU")
    print(f"{'':34}" + "".join(f"{c:>12}" for c in columns))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for size in SIZES:
            count = images if size == 64 else max(images // 20, 5)
            found = image_rounds(size, count, rounds, tmp)
            for name, kind in (
                ("encode PNG alone (floor)", "floor"),
                ("encode + write a new file", "file"),
                ("run.log(Image)", "log"),
            ):
                label = f"{size}x{size} {name}"
                median, mean, cpu = (found[f"{kind} {stat}"] for stat in ("median", "mean", "cpu"))
                ratios = (
                    f"{median / found['floor median']:11.2f}x {mean / found['floor mean']:11.2f}x"
                    f" {cpu * 1e6:11.0f} {cpu / found['floor cpu']:11.2f}x"
                )
                print(f"{label:34} {median * 1e6:11.0f} {mean * 1e6:11.0f} {ratios}")
            print(f"{'':34} finish (one os.sync for {count} blobs): {found['finish'] * 1e3:.1f} ms")
        hist = histogram_rounds(images * 10, rounds, tmp)
    print(f"{'':34} {'µs/call':>10} {'vs scalar':>10}")
    for name, key in (
        ("run.log(scalar)", "scalar"),
        ("run.log(Histogram, 64 bins)", "histogram"),
    ):
        print(f"{name:34} {hist[key] * 1e6:10.2f} {hist[key] / hist['scalar']:9.2f}x")
    print(f"{'Histogram(10,000 values) alone':34} {hist['build'] * 1e6:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=int,
        default=500,
        help="images per round (64x64; 512x512 gets a twentieth); 0 for the peers only",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated; '' for none")
    parser.add_argument("--peer-images", type=int, default=200)
    parser.add_argument("--peer-rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(peer_worker(args.worker, args.peer_images, args.folder)))
        return
    if args.images:  # 0: the peers only
        against_the_floor(args.images, args.rounds)
    if args.peers:
        peers_side_by_side(args.peers.split(","), args.peer_images, args.peer_rounds)


def peer_worker(name: str, images: int, folder: Path) -> dict[str, float]:
    """One tracker's run in this process: seconds per phase (``PEER_PHASES``)."""
    adapter = tracker(name)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    module = importlib.import_module(adapter.module or name)
    seconds["import"] = time.perf_counter() - start
    start = time.perf_counter()
    log = adapter.start(folder)
    seconds["init"] = time.perf_counter() - start
    pictures = pixels(64, images, seed=7)
    values = np.random.default_rng(0).normal(size=(images, HISTOGRAM_VALUES))
    rows = [[i, f"label {i}", i / TABLE_ROWS] for i in range(TABLE_ROWS)]
    new_rows = [
        [[i, f"label {i}", (i + t) / TABLE_ROWS] for i in range(TABLE_ROWS)] for t in range(TABLES)
    ]
    start = time.perf_counter()
    log({"img": module.Image(pictures[0])}, step=0)  # lazy imports (PIL, ...) land here
    seconds["first image"] = time.perf_counter() - start
    start = time.perf_counter()
    for step, picture in enumerate(pictures[1:], start=1):
        log({"img": module.Image(picture)}, step=step)
    seconds["images"] = time.perf_counter() - start
    start = time.perf_counter()
    for step, sample in enumerate(values, start=images):
        log({"h": module.Histogram(sample)}, step=step)
    seconds["histograms"] = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(2 * images, 2 * images + TABLES):
        log({"t": module.Table(columns=["id", "label", "score"], data=rows)}, step=step)
    seconds["tables"] = time.perf_counter() - start
    start = time.perf_counter()
    for step, table_rows in enumerate(new_rows, start=2 * images + TABLES):
        log({"t": module.Table(columns=["id", "label", "score"], data=table_rows)}, step=step)
    seconds["new tables"] = time.perf_counter() - start
    start = time.perf_counter()
    adapter.finish()
    seconds["finish"] = time.perf_counter() - start
    return seconds


def run_worker(name: str, images: int, folder: Path) -> dict[str, float]:
    """A fresh process for one tracker's run; adds ``process``: start to exit, waiting
    for every process it started (wandb's service) to be gone too."""
    folder.mkdir()
    env = {**os.environ, **OFFLINE_ENV, **tracker(name).env(folder)}
    command = [sys.executable, __file__, "--worker", name, "--peer-images", str(images)]
    start = time.perf_counter()
    worker = subprocess.Popen(
        [*command, "--folder", str(folder)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(worker.pid)
        while worker.poll() is None:
            with contextlib.suppress(psutil.Error):
                seen.update({child.pid: child for child in parent.children(recursive=True)})
            time.sleep(0.05)
    out, _ = worker.communicate(timeout=WORKER_TIMEOUT_S)
    psutil.wait_procs(list(seen.values()), timeout=60)
    process = time.perf_counter() - start
    if worker.returncode != 0 or not out.strip():
        raise RuntimeError(f"{name} worker failed (exit {worker.returncode})")
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    result["process"] = process
    result["files"] = sum(len(files) for _, _, files in os.walk(folder))
    return result


def peers_side_by_side(names: list[str], images: int, rounds: int) -> None:
    """The peers' rounds interleaved; medians per phase, and each against Waddle."""
    present = [name for name in names if importlib.util.find_spec(name) is not None]
    for name in sorted(set(names) - set(present)):
        print(f"{name}: not installed in {sys.prefix} (see this script's docstring)")
    found: dict[str, list[dict[str, float]]] = {name: [] for name in present}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(rounds):
            for name in list(found):
                try:
                    found[name].append(run_worker(name, images, Path(folder) / f"{name}-{index}"))
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"{name}: {exc}; left out")
                    del found[name]
    medians = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        for name, runs in found.items()
        if runs
    }
    print(
        f"\nPeers: {images} images 64x64, {images} histograms of {HISTOGRAM_VALUES:,} values, "
        f"{TABLES} tables of {TABLE_ROWS} rows logged again, then {TABLES} new ones; medians "
        f"of {rounds} fresh processes each"
    )
    header = ("process s", "import s", "init s", "1st img ms", "µs/image", "µs/hist", "ms/table")
    header = (*header, "ms/new tbl")
    print(f"{'':10}" + "".join(f"{h:>11}" for h in (*header, "finish s")) + f"{'files':>8}")
    for name, m in medians.items():
        cells = (
            m["process"],
            m["import"],
            m["init"],
            m["first image"] * 1e3,
            m["images"] / (images - 1) * 1e6,
            m["histograms"] / images * 1e6,
            m["tables"] / TABLES * 1e3,
            m["new tables"] / TABLES * 1e3,
            m["finish"],
        )
        print(f"{name:10}" + "".join(f"{c:11.2f}" for c in cells) + f"{m['files']:8.0f}")
    base = medians.get("waddle")
    if base:
        for name, m in medians.items():
            if name != "waddle":
                ratios = ", ".join(
                    f"{key} {m[key] / base[key]:.1f}x"
                    for key in ("process", "images", "histograms", "tables", "new tables")
                )
                print(f"{name} / waddle: {ratios}")


if __name__ == "__main__":
    main()

"""Media in run.log() against the floor it cannot beat, side by side in one process.

Images: ``run.log({"img": waddle.Image(pixels)})`` against encoding the same pixels as
PNG alone with the same encoder (Pillow when installed, else Waddle's stdlib writer):
what any tracker must do at least. Every call gets pixels of its own (a smooth gradient
plus noise, so zlib has work to do), so no blob is ever found already stored. Rounds
alternate between the two so machine drift hits both alike. The run's one ``os.sync``
at finish is timed on its own. Histograms: ``log()`` of a 64-bin histogram against
``log()`` of one scalar. wandb (offline) and Trackio are timed too when installed.

    python benchmarks/bench_media.py [--images 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import waddle
from waddle.producer.media.png import encode_png, pillow

SIZES = (64, 512)
PEERS = ("wandb", "trackio")


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
    serial = iter(range(1 << 30))
    folder.mkdir()

    def call(image: np.ndarray) -> None:
        (folder / f"{next(serial)}.png").write_bytes(encode_png(image))

    return call


def image_rounds(size: int, count: int, rounds: int, tmp: Path) -> dict[str, float]:
    floors, files, logs, syncs = [], [], [], []
    for index in range(rounds):
        images = pixels(size, count, seed=index)
        floors.append(per_call(encode_png, images))
        files.append(per_call(encode_and_write(tmp / f"files-{size}-{index}"), images))
        images = pixels(size, count, seed=1000 + index)  # new pixels: no blob is reused
        run = waddle.init(project="bench", root=tmp / f"{size}-{index}", system_metrics=False)
        logs.append(per_call(lambda a, run=run: run.log({"img": waddle.Image(a)}), images))
        start = time.perf_counter()
        run.finish()
        syncs.append(time.perf_counter() - start)
    return {
        "floor": statistics.median(floors),
        "file": statistics.median(files),
        "log": statistics.median(logs),
        "finish": statistics.median(syncs),
    }


def histogram_rounds(calls: int, rounds: int, tmp: Path) -> dict[str, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=int,
        default=1000,
        help="images per round (64x64; 512x512 gets a twentieth)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    encoder = "Pillow" if pillow() else "stdlib zlib writer (Pillow not installed)"
    print(f"PNG encoder: {encoder}; medians over {args.rounds} rounds")
    print(f"{'':34} {'images/s':>10} {'µs/image':>10} {'log/floor':>10}")
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for size in SIZES:
            count = args.images if size == 64 else max(args.images // 20, 5)
            found = image_rounds(size, count, args.rounds, tmp)
            for name, seconds in (
                ("encode PNG alone (floor)", found["floor"]),
                ("encode + write a new file", found["file"]),
                ("run.log(Image)", found["log"]),
            ):
                label = f"{size}x{size} {name}"
                ratio = seconds / found["floor"]
                print(f"{label:34} {1 / seconds:10.0f} {seconds * 1e6:10.0f} {ratio:9.2f}x")
            print(f"{'':34} finish (one os.sync for {count} blobs): {found['finish'] * 1e3:.1f} ms")
        hist = histogram_rounds(args.images * 10, args.rounds, tmp)
    print(f"{'':34} {'µs/call':>10} {'vs scalar':>10}")
    for name, key in (("run.log(scalar)", "scalar"), ("run.log(Histogram, 64 bins)", "histogram")):
        print(f"{name:34} {hist[key] * 1e6:10.2f} {hist[key] / hist['scalar']:9.2f}x")
    print(f"{'Histogram(10,000 values) alone':34} {hist['build'] * 1e6:10.2f}")
    for peer in PEERS:
        if importlib.util.find_spec(peer) is None:
            print(f"{peer}: not installed (pip install '.[bench]' in a separate environment)")
        else:
            print(f"{peer}: installed, but not timed here yet (see benchmarks/bench_peers.py)")


if __name__ == "__main__":
    main()

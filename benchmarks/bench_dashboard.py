"""Time to first chart in the dashboard, at scale, in Debian's chromium (Playwright).

Builds a Waddle folder with the real producer: one project of ``--runs`` runs (each a
short run with config, tags and summary) and one run whose ``train/loss`` has
``--steps`` steps (a million by default), then serves it with ``waddle serve`` on a
loopback port and measures, over ``--rounds`` fresh pages:

* runs table: from navigation until the table holds the whole project (sorted, counted,
  its first page of rows drawn; further rows are added as the table scrolls);
* first chart: from navigation to the run until its first chart is drawn with data
  (uPlot holds the downsampled series and has painted it);
* compare: the big run and a small one overlaid, until both series are drawn.

The folder is built once and kept (``--dir``, default under the system temp folder) so
later invocations skip the build; ``--rebuild`` forces it.

    python benchmarks/bench_dashboard.py [--runs 1000] [--steps 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

from serving import start_server

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RESULTS = Path(__file__).resolve().parent / "results"

# Run by a child python (from stdin, in a folder outside any git repository, so that
# waddle.init's context does not run git for every one of the thousand runs).
PRODUCER = r"""
import math, random, sys, time
import waddle
root, runs, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(0)
for i in range(runs):
    lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
    run = waddle.init(project="scale", name=f"sweep-{i:04d}", root=root, system_metrics=False,
                      config={"lr": lr, "batch_size": rng.choice([32, 64, 128]), "seed": i},
                      tags=["sweep", rng.choice(["a", "b"])])
    for step in range(20):
        run.log({"train/loss": math.exp(-step * lr * 100) + rng.random() * 0.1})
    run.summary["best"] = rng.random()
    run.finish()
big = waddle.init(project="scale", name="million", root=root, system_metrics=False,
                  config={"lr": 1e-3, "batch_size": 64, "seed": -1}, tags=["long"])
log = big.log
for step in range(steps):
    log({"train/loss": 2.0 * math.exp(-step / (steps / 5)) + 0.05 * math.sin(step / 50)})
big.finish()
print(big.id, flush=True)
"""


def build(root: Path, runs: int, steps: int) -> str:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-", str(root), str(runs), str(steps)],
        input=PRODUCER.encode(),
        capture_output=True,
        cwd=tempfile.gettempdir(),
        check=True,
    )
    big = done.stdout.decode().split()[-1]
    (root / "bench.json").write_text(json.dumps({"runs": runs, "steps": steps, "big": big}))
    print(f"built {runs} runs + 1 run of {steps:,} steps in {time.perf_counter() - started:.1f} s")
    return big


def wait_ingested(url: str, big: str, steps: int, runs: int) -> float:
    """Seconds until the DuckDB writer holds every run and the big run's last step."""
    started = time.perf_counter()
    while True:
        try:
            with urlopen(f"{url}api/runs?project=scale&limit=1") as response:
                total = json.load(response)["total"]
            with urlopen(f"{url}api/runs/{big}") as response:
                last = json.load(response).get("last_step")
        except OSError:
            total, last = 0, None
        if total >= runs + 1 and last == steps - 1:
            return time.perf_counter() - started
        time.sleep(0.2)


DRAWN = """([key, series]) => [...document.querySelectorAll('.chart')].some((n) =>
    n.__chart.options.title === key && n.__chart.uplot
    && n.__chart.uplot.series.length - 1 === series
    && n.__chart.uplot.data.slice(1).every((ys) => ys.some((y) => y != null)))"""


def measure(browser, url: str, fragment: str, ready: str, arg: object) -> float:
    """Milliseconds from navigation start until ``ready`` holds (then one frame painted)."""
    # No request interception here: routing every request through Playwright would add
    # its own latency to each of them (tests/dashboard checks that no request leaves).
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{url}#{fragment}")
        page.wait_for_function(ready, arg=arg, timeout=60_000)
        return page.evaluate(
            "() => new Promise((done) => requestAnimationFrame(() => done(performance.now())))"
        )
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "waddle-bench-dashboard"
    )
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    meta = args.dir / "bench.json"
    saved = json.loads(meta.read_text()) if meta.exists() else {}
    if args.rebuild or saved.get("runs") != args.runs or saved.get("steps") != args.steps:
        big = build(args.dir, args.runs, args.steps)
    else:
        big = saved["big"]
    proc, base = start_server(args.dir)
    url = base + "/"
    try:
        ingest = wait_ingested(url, big, args.steps, args.runs)
        print(f"server ready; tables complete {ingest:.1f} s after start")
        with urlopen(f"{url}api/runs?project=scale&limit=2&sort=name") as response:
            small = json.load(response)["runs"][0]["run_id"]
        rows = (
            "([n]) => document.querySelector('.run-count')?.textContent === `${n} of ${n} runs`"
            " && document.querySelectorAll('table.runs tbody tr[data-run]').length"
            " >= Math.min(n, 200)"
        )
        cases = [
            (f"runs table ({args.runs + 1} runs)", "project=scale", rows, [args.runs + 1]),
            (
                f"first chart ({args.steps:,} steps)",
                f"project=scale&run={big}",
                DRAWN,
                ["train/loss", 1],
            ),
            (
                "compare (big + small run)",
                f"project=scale&compare={big},{small}",
                DRAWN,
                ["train/loss", 2],
            ),
        ]
        figures: dict[str, list[float]] = {name: [] for name, *_ in cases}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            measure(browser, url, cases[1][1], DRAWN, ["train/loss", 1])  # warm-up
            for _ in range(args.rounds):
                for name, fragment, ready, arg in cases:
                    figures[name].append(measure(browser, url, fragment, ready, arg))
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    print()
    print("| view | median ms | min ms | max ms | rounds |")
    print("|---|---:|---:|---:|---:|")
    for name, values in figures.items():
        print(
            f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | "
            f"{max(values):.0f} | {len(values)} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_dashboard.json"
    out.write_text(json.dumps({"runs": args.runs, "steps": args.steps, "ms": figures}, indent=1))
    print(f"\nevery round: {out} (chromium {args.chromium}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

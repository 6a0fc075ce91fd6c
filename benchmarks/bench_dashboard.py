"""The dashboard at scale, in Debian's chromium (Playwright): the runs table's first
page at 10,000 runs, side by side with the same at a tenth of that, and the first chart
of a 1,000,000-step run.

Builds a Waddle folder with the real producer (children in parallel, one per CPU): a
project "scale" of ``--runs`` runs, a project "small" of a tenth as many (each a short
run with config, tags and a summary metric), and in "scale" one run whose ``train/loss``
has ``--steps`` steps. It serves the folder with ``waddle serve`` on a loopback port and
measures, over ``--rounds`` fresh pages, each case once per round (in an order that
rotates from round to round, each after a pause of a second):

* runs table: from navigation until its first page is painted (the server counted,
  sorted and sent one page of 100 runs; the rows are drawn), for "scale" and "small":
  the ratio says whether the cost grows with the project;
* sort: from a click on a summary metric's column head until the re-sorted first page
  is drawn (sorted over every run by the server);
* first chart: from navigation to the big run until its first chart is drawn with data;
* compare: the big run and a small one overlaid, until both series are drawn.

It also times, side by side, what the table asks the API for now (one page) and what
it asked before paging moved to the server (every run of the project, 10,000 rows with
config and summary).

The folder is built once and kept (``--dir``, default under the system temp folder) so
later invocations skip the build; ``--rebuild`` forces it.

    python benchmarks/bench_dashboard.py [--runs 10000] [--steps 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import itertools
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
from typing import Any
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

# Run by child pythons (from stdin, in a folder outside any git repository, so that
# waddle.init's context does not run git for every run): runs [first, last) of a project.
PRODUCER = r"""
import math, random, sys
import waddle
root, project, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(first, last):
    rng = random.Random(i)
    lr = rng.choice([1e-4, 3e-4, 1e-3, 3e-3])
    run = waddle.init(project=project, name=f"sweep-{i:05d}", root=root, system_metrics=False,
                      config={"lr": lr, "batch_size": rng.choice([32, 64, 128]), "seed": i},
                      tags=["sweep", rng.choice(["a", "b"])])
    for step in range(20):
        run.log({"train/loss": math.exp(-step * lr * 100) + rng.random() * 0.1})
    run.summary["best"] = rng.random()
    run.finish()
"""
BIG = r"""
import math, sys
import waddle
root, steps = sys.argv[1], int(sys.argv[2])
big = waddle.init(project="scale", name="million", root=root, system_metrics=False,
                  config={"lr": 1e-3, "batch_size": 64, "seed": -1}, tags=["long"])
log = big.log
for step in range(steps):
    log({"train/loss": 2.0 * math.exp(-step / (steps / 5)) + 0.05 * math.sin(step / 50)})
big.finish()
print(big.id, flush=True)
"""
PAGE = 100  # the runs table's PAGE_SIZE (static/js/runs_table.js)
SETTLE_S = 1.0


def child(script: str, *args: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-", *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # finish() says where each run is
        cwd=tempfile.gettempdir(),
    )
    assert proc.stdin is not None
    proc.stdin.write(script.encode())
    proc.stdin.close()
    return proc


def build(root: Path, projects: dict[str, int], steps: int) -> str:
    """Write the projects' runs (one child per CPU) and the big run; its id."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    started = time.perf_counter()
    jobs = max(1, os.cpu_count() or 1)
    procs = [child(BIG, root, steps)]
    for project, runs in projects.items():
        cuts = [runs * j // jobs for j in range(jobs + 1)]
        procs += [child(PRODUCER, root, project, a, b) for a, b in itertools.pairwise(cuts)]
    outputs = [proc.stdout.read() if proc.stdout else b"" for proc in procs]
    if any(proc.wait() for proc in procs):
        raise SystemExit("a producer failed")
    big = outputs[0].decode().split()[-1]
    meta = {"projects": projects, "steps": steps, "big": big}
    (root / "bench.json").write_text(json.dumps(meta))
    total = sum(projects.values())
    print(
        f"built {total:,} runs + 1 run of {steps:,} steps in "
        f"{time.perf_counter() - started:.1f} s ({jobs} producers)"
    )
    return big


def get_json(url: str) -> dict[str, Any]:
    with urlopen(url) as response:
        return json.load(response)


def wait_ingested(url: str, big: str, steps: int, projects: dict[str, int]) -> float:
    """Seconds until the DuckDB writer holds every run and the big run's last step."""
    started = time.perf_counter()
    wanted = {**projects, "scale": projects["scale"] + 1}
    while True:
        try:
            totals = {p: get_json(f"{url}api/runs?project={p}&limit=1")["total"] for p in wanted}
            last = get_json(f"{url}api/runs/{big}").get("last_step")
        except OSError:
            totals, last = {}, None
        if totals == wanted and last == steps - 1:
            return time.perf_counter() - started
        time.sleep(0.5)


def api_ms(url: str, path: str, rounds: int) -> list[float]:
    """Milliseconds for GET path, read whole, ``rounds`` times."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        get_json(f"{url}{path}")
        times.append((time.perf_counter() - started) * 1000)
    return times


DRAWN = """([key, series]) => [...document.querySelectorAll('.chart')].some((n) =>
    n.__chart.options.title === key && n.__chart.uplot
    && n.__chart.uplot.series.length - 1 === series
    && n.__chart.uplot.data.slice(1).every((ys) => ys.some((y) => y != null)))"""
# The first page painted: the count names the project's total, the page's rows are drawn.
FIRST_PAGE = """([n, page]) => document.querySelector('.run-count')?.textContent
    === `1\u2013${Math.min(n, page)} of ${n} runs`
    && document.querySelectorAll('table.runs tbody tr[data-run]').length === Math.min(n, page)
    && !document.querySelector('table.runs[data-loading]')"""


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


def measure_sort(browser, url: str, runs: int) -> float:
    """Milliseconds from a click on the summary column "best" until the first page,
    sorted by it over every run, is drawn."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    try:
        page.goto(f"{url}#project=scale")
        page.wait_for_function(FIRST_PAGE, arg=[runs, PAGE], timeout=60_000)
        head = 'th[data-column="summary:best"]'
        return page.evaluate(
            """(head) => new Promise((done) => {
                const table = document.querySelector('table.runs');
                const start = performance.now();
                const watch = new MutationObserver(() => {
                    if (table.dataset.loading) return;
                    watch.disconnect();
                    requestAnimationFrame(() => done(performance.now() - start));
                });
                watch.observe(table, { attributes: true, attributeFilter: ['data-loading'] });
                document.querySelector(head).click();
            })""",
            head,
        )
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "waddle-bench-dashboard"
    )
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    projects = {"scale": args.runs, "small": max(1, args.runs // 10)}
    meta = args.dir / "bench.json"
    saved = json.loads(meta.read_text()) if meta.exists() else {}
    if args.rebuild or saved.get("projects") != projects or saved.get("steps") != args.steps:
        big = build(args.dir, projects, args.steps)
    else:
        big = saved["big"]
    print(f"load average before serving: {os.getloadavg()[0]:.2f}")
    proc, base = start_server(args.dir)
    url = base + "/"
    try:
        ingest = wait_ingested(url, big, args.steps, projects)
        print(f"server ready; tables complete {ingest:.1f} s after start")
        small_run = get_json(f"{url}api/runs?project=scale&limit=1&sort=name&order=desc")
        small_run_id = small_run["runs"][0]["run_id"]
        scale, tenth = projects["scale"] + 1, projects["small"]
        cases = [
            (
                f"runs table, first page ({scale:,} runs)",
                "project=scale",
                FIRST_PAGE,
                [scale, PAGE],
            ),
            (
                f"runs table, first page ({tenth:,} runs)",
                "project=small",
                FIRST_PAGE,
                [tenth, PAGE],
            ),
            (
                f"first chart ({args.steps:,} steps)",
                f"project=scale&run={big}",
                DRAWN,
                ["train/loss", 1],
            ),
            (
                "compare (big + small run)",
                f"project=scale&compare={big},{small_run_id}",
                DRAWN,
                ["train/loss", 2],
            ),
        ]
        sort_case = f"sort by a summary metric ({scale:,} runs, click to drawn)"
        figures: dict[str, list[float]] = {name: [] for name, *_ in cases}
        figures[sort_case] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            measure(browser, url, cases[0][1], FIRST_PAGE, [scale, PAGE])  # warm-up
            timers = [
                *[(name, lambda c=case: measure(browser, url, *c)) for name, *case in cases],
                (sort_case, lambda: measure_sort(browser, url, scale)),
            ]
            for round_ in range(args.rounds):
                # Each round in another order, and a pause before each case: the table asks
                # for its menus after the first page is painted, and that query must not
                # land on the next case.
                for name, timer in timers[round_ % len(timers) :] + timers[: round_ % len(timers)]:
                    time.sleep(SETTLE_S)
                    figures[name].append(timer())
            browser.close()
        api = {
            f"GET /api/runs, one page of {PAGE} (now)": api_ms(
                url, f"api/runs?project=scale&limit={PAGE}", args.rounds
            ),
            f"GET /api/runs, all {scale:,} runs (the table before #14)": api_ms(
                url, "api/runs?project=scale&limit=10000", args.rounds
            ),
            f"GET /api/facets, {scale:,} runs (the menus, after the first page)": api_ms(
                url, "api/facets?project=scale", args.rounds
            ),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

    print()
    print("| view | median ms | min ms | max ms | rounds |")
    print("|---|---:|---:|---:|---:|")
    for name, values in {**figures, **api}.items():
        print(
            f"| {name} | {statistics.median(values):.0f} | {min(values):.0f} | "
            f"{max(values):.0f} | {len(values)} |"
        )
    median = {name: statistics.median(values) for name, values in {**figures, **api}.items()}
    pages = [median[name] for name, *_ in cases[:2]]
    calls = [median[name] for name in api]
    print(f"\nfirst page at {scale:,} runs / at {tenth:,} runs: {pages[0] / pages[1]:.2f}x")
    print(f"API: all runs / one page: {calls[1] / calls[0]:.1f}x")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_dashboard.json"
    out.write_text(
        json.dumps({"projects": projects, "steps": args.steps, "ms": {**figures, **api}}, indent=1)
    )
    print(f"every round: {out} (chromium {args.chromium}, {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

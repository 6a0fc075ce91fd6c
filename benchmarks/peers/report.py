"""Medians and spread across rounds, and the Markdown tables printed and kept in docs.

Every figure is reduced to its median over rounds with min and max beside it. A median
whose spread (max - min) exceeds a quarter of it is marked ``~`` so a reader sees which
numbers the shared machine made noisy. Ratios to Waddle are paired by round (each
round against Waddle's figure of that same round) before the median is taken, so drift
between rounds cancels out; slowdowns are paired within their own process.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

Rounds = list[dict[str, float]]
NOISY = 0.25

LOG_FIGURES = (
    "log_mean_us",
    "log_p50_us",
    "log_p99_us",
    "log_max_us",
    "ratio_to_waddle",
    "import_ms",
    "init_new_store_ms",
    "init_ms",
    "finish_ms",
    "exit_ms",
    "rss_mb",
    "child_rss_mb",
    "bytes_per_value",
)
TRAIN_FIGURES = ("baseline_step_ms", "step_ms", "slowdown_pct")


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of one figure over the rounds."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired(rounds: Rounds, reference: Rounds, key: str) -> dict[int, float]:
    """Each round's ``key`` divided by the reference's value in the same round."""
    ref = {r["round"]: r[key] for r in reference}
    return {r["round"]: r[key] / ref[r["round"]] for r in rounds if r["round"] in ref}


def summarize(raw: dict[str, dict[str, Rounds]]) -> dict[str, dict[str, dict]]:
    """Reduce per-round results of both workloads to spreads per tracker and figure."""
    log = raw["log"]
    for rounds in log.values():
        ratios = paired(rounds, log.get("waddle", []), "log_mean_us")
        for r in rounds:
            if r["round"] in ratios:
                r["ratio_to_waddle"] = ratios[r["round"]]
    return {
        workload: {
            name: {
                key: spread(r[key] for r in rounds if key in r)
                for key in figures
                if any(key in r for r in rounds)
            }
            for name, rounds in raw[workload].items()
            if rounds
        }
        for workload, figures in (("log", LOG_FIGURES), ("train", TRAIN_FIGURES))
    }


def number(x: float) -> str:
    """Three significant digits or so, without scientific notation."""
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def cell(figures: dict[str, dict], key: str, *, span: bool = False) -> str:
    """A median with its [min, max] range, or alone and marked ``~`` when noisy."""
    if key not in figures:
        return "n/a"
    s = figures[key]
    text = number(s["median"])
    if span:
        return text + (f" [{number(s['min'])}, {number(s['max'])}]" if s["max"] != s["min"] else "")
    if s["median"] and (s["max"] - s["min"]) > NOISY * abs(s["median"]):
        text += "~"
    return text


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(summary: dict[str, dict[str, dict]], rows: dict[str, str], meta: dict) -> str:
    """The three tables: log() cost, footprint, and the training loop's slowdown."""
    log, train = summary["log"], summary["train"]
    setup = table(
        ["tracker", "version", "configuration"],
        [[name, meta["versions"].get(name, ""), note] for name, note in rows.items()],
    )
    cost = table(
        [
            "tracker",
            "log() mean µs [min, max]",
            "p50 µs",
            "p99 µs",
            "x Waddle",
            "init ms, new store",
            "init ms",
            "finish ms",
            "exit ms",
        ],
        [
            [name]
            + [cell(f, "log_mean_us", span=True)]
            + [cell(f, k) for k in ("log_p50_us", "log_p99_us", "ratio_to_waddle")]
            + [cell(f, k) for k in ("init_new_store_ms", "init_ms", "finish_ms", "exit_ms")]
            for name, f in log.items()
        ],
    )
    footprint = table(
        ["tracker", "import ms", "peak RSS MB", "child processes' RSS MB", "bytes on disk / value"],
        [
            [name]
            + [cell(f, k) for k in ("import_ms", "rss_mb", "child_rss_mb", "bytes_per_value")]
            for name, f in log.items()
        ],
    )
    loop = table(
        ["tracker", "ms per step, bare", "ms per step, with log()", "slowdown % [min, max]"],
        [
            [name]
            + [cell(f, k) for k in ("baseline_step_ms", "step_ms")]
            + [cell(f, "slowdown_pct", span=True)]
            for name, f in train.items()
        ],
    )
    n, steps, rounds = meta["n"], meta["train_steps"], meta["rounds"]
    return "\n\n".join(
        [
            f"Medians over {rounds} round(s), [min, max] where shown; ~ marks a median "
            f"whose min-max spread exceeds {NOISY:.0%} of it. Measurements that started "
            f"while other work kept the machine busy: {meta['started_busy']}.",
            setup,
            f"log(): {n:,} calls of 8 floats each, one fresh process per tracker and round.",
            cost,
            footprint,
            f"Training loop: {steps:,} steps of ~1 ms numpy, log() of 8 values per step; "
            "slowdown against the same loop with a no-op for log(), run just before in the "
            "same process. The `none` row runs the no-op twice: its spread is the noise.",
            loop,
        ]
    )

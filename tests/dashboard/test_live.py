"""Live updates in a real browser: a value logged by a running run appears without a
reload, the runs table follows, and the page reconnects after the server restarts."""

from __future__ import annotations

import time
from typing import Any

import waddle
import waddle.producer.api

from .conftest import Server, chart_data, wait_for_runs

TIMEOUT_MS = 15_000
LIVE_BUDGET_S = 1.0


def has_point(page: Any, key: str, x: float) -> bool:
    chart = chart_data(page).get(key)
    return bool(chart) and x in chart["xs"]


def wait_for_point(page: Any, key: str, x: float) -> float:
    """Seconds until the chart of ``key`` has a point at ``x``."""
    start = time.monotonic()
    page.wait_for_function(
        """([key, x]) => [...document.querySelectorAll('.chart')].some((n) =>
            n.__chart.options.title === key && n.__chart.uplot
            && n.__chart.uplot.data[0].includes(x))""",
        arg=[key, x],
        timeout=TIMEOUT_MS,
    )
    return time.monotonic() - start


def test_values_appear_without_reload_and_survive_a_restart(
    live_server: Server, open_page: Any
) -> None:
    root = live_server.root
    run = waddle.init(
        project="live", name="training", root=root, config={"lr": 0.1}, system_metrics=False
    )
    for step in range(20):
        run.log({"train/loss": 1 / (step + 1)})
    wait_for_runs(live_server, "live", 1)

    table, _ = open_page(live_server, "project=live")
    step_cell = table.locator(f'tr[data-run="{run.id}"] td[data-column="last_step"]')
    step_cell.wait_for(timeout=TIMEOUT_MS)
    assert (
        table.locator(f'tr[data-run="{run.id}"] td[data-column="status"]').inner_text() == "running"
    )

    # A run that starts while the table is open appears in it (the page is fetched again).
    second = waddle.init(
        project="live", name="second", root=root, system_metrics=False, reinit="create_new"
    )
    second.log({"train/loss": 1.0})
    table.locator(f'tr[data-run="{second.id}"]').wait_for(timeout=TIMEOUT_MS)
    second.finish()

    page, _ = open_page(live_server, f"project=live&run={run.id}")
    page.wait_for_selector('.live-status[data-status="live"]', timeout=TIMEOUT_MS)
    wait_for_point(page, "train/loss", 19)

    # A value logged while the page is open: on the chart within a second, no reload.
    run.log({"train/loss": 0.01}, step=100)
    assert wait_for_point(page, "train/loss", 100) < LIVE_BUDGET_S
    # A key never seen before gets a chart of its own.
    run.log({"val/acc": 0.5}, step=101)
    wait_for_point(page, "val/acc", 101)
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1
    # The runs table in the other page followed in place.
    table.wait_for_function(
        "([id]) => document.querySelector(`tr[data-run='${id}'] td[data-column='last_step']`)"
        ".textContent === '101'",
        arg=[run.id],
        timeout=TIMEOUT_MS,
    )

    # The server restarts on the same port: the page reconnects and goes on.
    live_server.stop()
    page.wait_for_selector('.live-status:not([data-status="live"])', timeout=TIMEOUT_MS)
    run.log({"train/loss": 0.005}, step=200)  # logged while no server is up
    live_server.start()
    page.wait_for_selector('.live-status[data-status="live"]', timeout=TIMEOUT_MS)
    wait_for_point(page, "train/loss", 200)  # replayed from the log after reconnecting
    run.log({"train/loss": 0.004}, step=201)
    assert wait_for_point(page, "train/loss", 201) < LIVE_BUDGET_S

    run.finish()
    page.wait_for_function(
        "() => document.querySelector('.run-head .status').textContent === 'finished'",
        timeout=TIMEOUT_MS,
    )
    table.wait_for_function(
        "([id]) => document.querySelector(`tr[data-run='${id}'] td[data-column='status']`)"
        ".textContent === 'finished'",
        arg=[run.id],
        timeout=TIMEOUT_MS,
    )
    assert chart_data(page)["train/loss"]["points"] == [23]

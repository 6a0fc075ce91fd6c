"""The dashboard's views in a real browser, over runs written by the real producer:
the runs table, a run's charts and context, the comparison, URL state and safety."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .conftest import Server, chart_data, color_pixels, eventually, run_color
from .seed import PROJECT, STEPS, XSS_NAME

TIMEOUT_MS = 15_000


def wait_for_charts(page: Any, keys: list[str], series: int = 1) -> dict[str, Any]:
    """The chart data once every key has ``series`` series with points."""
    page.wait_for_function(
        """([keys, series]) => keys.every((key) => [...document.querySelectorAll('.chart')]
            .some((n) => n.__chart.options.title === key && n.__chart.uplot
                && n.__chart.uplot.series.length - 1 === series
                && n.__chart.uplot.data.slice(1).every((ys) => ys.some((y) => y != null))))""",
        arg=[keys, series],
        timeout=TIMEOUT_MS,
    )
    return chart_data(page)


def settled(page: Any) -> None:
    """Wait until the runs table shows the server's answer to its latest filter, sort or page."""
    page.wait_for_selector("table.runs:not([data-loading])", state="attached", timeout=TIMEOUT_MS)


def test_runs_table_lists_the_runs(
    server: Server, seeded: tuple[Path, dict[str, str]], open_page: Any, screenshot: Any
) -> None:
    _, ids = seeded
    page, _ = open_page(server, "", stale_after=2)
    page.wait_for_selector("table.runs tbody tr[data-run]", timeout=TIMEOUT_MS)
    assert PROJECT in page.url  # the first project is chosen and put in the URL
    rows = page.locator("table.runs tbody tr[data-run]")
    assert rows.count() == len(ids)
    shown = {row.get_attribute("data-run") for row in rows.all()}
    assert shown == set(ids.values())

    def cell(name: str, column: str) -> str:
        return page.locator(f'tr[data-run="{ids[name]}"] td[data-column="{column}"]').inner_text()

    assert cell("baseline", "status") == "finished"
    assert cell("slow", "status") == "failed"
    assert cell("baseline", "last_step") == str(STEPS - 1)
    assert "base" in cell("wide", "tags")
    # The process of "crashed" died of SIGKILL: no finish, silent for longer than 2 s.
    eventually(lambda: cell("crashed", "status") == "stale", timeout=10, what="a stale run")
    # Config columns that vary and summary metrics are chosen by default.
    headers = page.locator("table.runs thead th").all_inner_texts()
    assert any(h.startswith("batch_size") for h in headers)
    assert any(h.startswith("best/val_acc") for h in headers)
    screenshot(page, "runs")

    # Sort by a config column, both ways.
    page.locator('th[data-column="config:batch_size"]').click()
    settled(page)
    first = page.locator("table.runs tbody tr[data-run]").first.get_attribute("data-run")
    assert first != ids["wide"]
    page.locator('th[data-column="config:batch_size"]').click()
    settled(page)
    first = page.locator("table.runs tbody tr[data-run]").first.get_attribute("data-run")
    assert first == ids["wide"]

    # Filters: text, status, tag, config value (applied by the server).
    def shown() -> set[str | None]:
        settled(page)
        return {r.get_attribute("data-run") for r in page.locator("tbody tr[data-run]").all()}

    # The text filter also matches run ids, which are random: a "wid" inside one is a match.
    text_matches = {ids["wide"]} | {run_id for run_id in ids.values() if "wid" in run_id}
    page.fill("input.text-filter", "wid")
    assert shown() == text_matches
    page.fill("input.text-filter", "")
    page.select_option("select.status-filter", "failed")
    assert shown() == {ids["slow"]}
    page.select_option("select.status-filter", "")
    page.select_option("select.tag-filter", "base")
    assert shown() == {ids["baseline"], ids["wide"]}
    page.select_option("select.tag-filter", "")
    page.select_option("select.config-key-filter", "lr")
    page.fill("input.config-value-filter", ">0.002")
    assert shown() == {ids["baseline"], ids["wide"], ids["crashed"]}


def test_run_view_draws_the_charts(
    server: Server, seeded: tuple[Path, dict[str, str]], open_page: Any, screenshot: Any
) -> None:
    _, ids = seeded
    page, _ = open_page(server, f"project={PROJECT}&run={ids['baseline']}")
    charts = wait_for_charts(page, ["train/loss", "train/acc", "val/loss"])
    assert charts["train/loss"]["points"] == [STEPS]
    assert charts["val/loss"]["points"] == [STEPS // 20]
    assert charts["train/loss"]["xs"][:3] == [0, 1, 2]
    color = run_color(page, ".run-head .swatch")
    assert color_pixels(page, "train/loss", color) > 50, "no curve drawn on the canvas"
    # Grouped by prefix, with the context, config and summary.
    groups = page.locator("details.group .group-name").all_inner_texts()
    assert {"train", "val"} <= set(groups)
    assert page.locator("#config table").inner_text().count("batch_size") == 1
    assert "best/val_acc" in page.locator("#summary table").inner_text()
    context = page.locator("#context table").inner_text()
    assert "host" in context and "python" in context and "command" in context
    screenshot(page, "run")

    # Chart controls: smoothing adds an average over a faint raw curve, log scale, x axis.
    page.locator("input.smoothing").fill("0.8")
    charts = wait_for_charts(page, ["train/loss"], series=2)
    assert charts["train/loss"]["points"] == [STEPS, STEPS]
    page.locator("input.log-scale").check()
    distr = page.evaluate("() => document.querySelector('.chart').__chart.uplot.scales.y.distr")
    assert distr == 3
    assert "smooth=0.8" in page.url and "log=1" in page.url
    page.select_option("select.x-mode", "relative")
    charts = wait_for_charts(page, ["train/loss"], series=2)
    assert 0 <= charts["train/loss"]["xs"][0] < 60  # seconds since the run started
    # Hover shows every series' value; a drag zooms, Reset zoom undoes it.
    chart = page.locator(".chart .u-over").first
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert page.locator(".chart").first.locator(".legend-raw").first.inner_text().startswith("raw")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    zoomed = page.evaluate("() => document.querySelector('.chart').__chart.uplot.scales.x")
    page.click("button.reset-zoom")
    reset = page.evaluate("() => document.querySelector('.chart').__chart.uplot.scales.x")
    assert zoomed["max"] - zoomed["min"] < reset["max"] - reset["min"]

    # System metrics of another run: one chart per key, grouped (cpu, memory, ...).
    page.goto(f"{server.url}#project={PROJECT}&run={ids['profiled']}")
    charts = wait_for_charts(page, ["cpu/percent", "memory/used"])
    assert charts["cpu/percent"]["points"][0] >= 2


def test_compare_overlays_runs_and_marks_config_differences(
    server: Server, seeded: tuple[Path, dict[str, str]], open_page: Any, screenshot: Any
) -> None:
    _, ids = seeded
    page, _ = open_page(server, f"project={PROJECT}")
    page.wait_for_selector("table.runs tbody tr[data-run]", timeout=TIMEOUT_MS)
    for name in ("baseline", "wide"):
        page.locator(f'tr[data-run="{ids[name]}"] input.select-run').check()
    page.click("button.compare-button")
    charts = wait_for_charts(page, ["train/loss", "val/acc"], series=2)
    assert charts["train/loss"]["points"] == [STEPS, STEPS]
    colors = {
        name: run_color(page, f'.legend-run[data-run="{ids[name]}"] .swatch')
        for name in ("baseline", "wide")
    }
    assert colors["baseline"] != colors["wide"]
    for color in colors.values():
        assert color_pixels(page, "train/loss", color) > 50
    differs = set(
        page.locator("#config tr.differs").evaluate_all("(rows) => rows.map((r) => r.dataset.key)")
    )
    same = set(
        page.locator("#config tr.same").evaluate_all("(rows) => rows.map((r) => r.dataset.key)")
    )
    assert differs == {"batch_size", "width"}
    assert same == {"lr", "optimizer"}
    page.set_viewport_size({"width": 1360, "height": 1300})
    page.wait_for_timeout(200)
    screenshot(page, "compare")

    # The URL holds the comparison: a reload (or a shared link) shows the same view.
    state = parse_qs(urlsplit(page.url).fragment)
    assert set(state["compare"][0].split(",")) == {ids["baseline"], ids["wide"]}
    assert state["project"] == [PROJECT]
    page.reload()
    charts = wait_for_charts(page, ["train/loss"], series=2)
    legend = page.locator(".legend-run").evaluate_all("(nodes) => nodes.map((n) => n.dataset.run)")
    assert set(legend) == {ids["baseline"], ids["wide"]}
    # Colours are stable: the same run keeps its colour after the reload.
    assert (
        run_color(page, f'.legend-run[data-run="{ids["baseline"]}"] .swatch') == colors["baseline"]
    )


def test_names_keys_and_values_are_shown_as_text(
    server: Server, seeded: tuple[Path, dict[str, str]], open_page: Any
) -> None:
    _, ids = seeded
    page, watch = open_page(server, f"project={PROJECT}")
    link = page.locator(f'tr[data-run="{ids[XSS_NAME]}"] a.run-link')
    link.wait_for(timeout=TIMEOUT_MS)
    assert link.inner_text() == XSS_NAME
    assert "<i>tag</i>" in page.locator(f'tr[data-run="{ids[XSS_NAME]}"]').inner_text()
    link.click()
    wait_for_charts(page, ["<svg onload=alert(3)>"])
    assert page.locator("h2.run-name").inner_text() == XSS_NAME
    assert "<script>alert(2)</script>" in page.locator("#config table").inner_text()
    assert page.locator("img, svg, script:not([src])").count() == 0
    page.wait_for_timeout(300)
    assert not watch.dialogs

"""A run as Hugging Face leaves it, in a real browser: the x axis is its step metric, the
step counter is no chart, the runs table leads with metrics and few config columns, and a
section with one chart uses the width.

The log is written with the raw stream writer as the wandb surface writes it through HF's
callback: ``define_metric("train/*" | "eval/*", step_metric="train/global_step")``, and
eval logged on internal steps of its own, between train's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.logs import open_stream, run_fields
from waddle.eventlog.writer import StreamWriter

from .conftest import Server, chart_data, color_pixels, run_color, wait_for_runs

TIMEOUT_MS = 15_000
PROJECT = "hf"
STEP = "train/global_step"
# An HF model config: many keys, a few of them null.
CONFIG = {f"hf_key_{i:03d}": i for i in range(40)} | {"pad_token_id": None, "prefix": None}


def write_run(root: Path, run_id: str, lr: float, batch: int) -> StreamWriter:
    """An HF-like run, left open (the test logs more into it)."""
    writer = open_stream(root, run_id)
    config = CONFIG | {"learning_rate": lr, "per_device_train_batch_size": batch}
    writer.append("run", run_fields(run_id, project=PROJECT, name=f"hf-{run_id}", config=config))
    for metric in ("train/*", "eval/*"):
        spec = {"step_metric": STEP, "summary": None, "hidden": False, "goal": None}
        writer.append("define_metric", {"metric": metric, **spec})
    step = 0
    for global_step in range(0, 100, 10):
        data = {"train/loss": 2 * lr / (1 + global_step), STEP: global_step}
        writer.append("metrics", {"step": step, "data": data})
        step += 1
        if global_step % 30 == 0:
            data = {"eval/loss": 1.0 - global_step / 100, STEP: global_step}
            writer.append("metrics", {"step": step, "data": data})
            step += 1
    summary = {"train/loss": 2 * lr / 91, "eval/loss": 0.1, STEP: 90, "_runtime": 3.0}
    writer.append("summary", {"summary": summary})
    return writer


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, StreamWriter]]:
    root = tmp_path_factory.mktemp("hf") / "root"
    other = write_run(root, "hfother", 1e-3, 16)
    other.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    other.close()
    lightning = open_stream(root, "ltrun")
    lightning.append("run", run_fields("ltrun", project="lightning", config={"lr": 0.1}))
    spec = {"step_metric": "trainer/global_step", "summary": None, "hidden": False, "goal": None}
    lightning.append("define_metric", {"metric": "*", **spec})
    for step, global_step in enumerate((0, 30, 60, 90)):
        data = {"eval/loss": 0.9 - global_step / 200, "trainer/global_step": global_step}
        lightning.append("metrics", {"step": step, "data": data})
    lightning.append("finish", {"exit_code": 0, "status": "finished", "dropped": {}})
    lightning.close()
    live = write_run(root, "hflive", 5e-4, 8)
    server = Server(root).start()
    wait_for_runs(server, PROJECT, 2)
    wait_for_runs(server, "lightning", 1)
    yield server, live
    live.close()
    server.stop()


def test_the_x_axis_is_the_step_metric_and_the_counter_is_no_chart(
    hf: tuple[Server, StreamWriter], open_page: Any, screenshot: Any
) -> None:
    server, live = hf
    page, _ = open_page(server, f"project={PROJECT}&run=hflive")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].filter((n) => n.__chart.uplot"
        " && n.__chart.uplot.data[0].length).length >= 2",
        timeout=TIMEOUT_MS,
    )
    assert page.locator(".x-mode").input_value() == f"metric:{STEP}"
    charts = chart_data(page)
    assert STEP not in charts and page.locator(f'.chart-slot[data-key="{STEP}"]').count() == 0
    assert charts["eval/loss"]["xs"] == [0, 30, 60, 90]  # the global steps, not 1, 5, 9, 13
    assert charts["train/loss"]["xs"] == list(range(0, 100, 10))
    color = run_color(page, ".run-head .swatch")
    assert color_pixels(page, "eval/loss", color) > 50

    # A live point: x is the value of the step metric logged with it.
    live.append("metrics", {"step": 20, "data": {"eval/loss": 0.05, STEP: 120}})
    page.wait_for_function(
        """() => [...document.querySelectorAll('.chart')].some((n) =>
            n.__chart.options.title === 'eval/loss' && n.__chart.uplot.data[0].includes(120))""",
        timeout=TIMEOUT_MS,
    )
    assert 20 not in chart_data(page)["eval/loss"]["xs"]
    screenshot(page, "run_step_metric")

    # The internal step is still a choice.
    page.select_option(".x-mode", "step")
    page.wait_for_function(
        """() => [...document.querySelectorAll('.chart')].some((n) =>
            n.__chart.options.title === 'eval/loss' && n.__chart.uplot
            && n.__chart.uplot.data[0].includes(13))""",
        timeout=TIMEOUT_MS,
    )
    assert chart_data(page)["eval/loss"]["xs"] == [1, 5, 9, 13, 20]


def test_a_section_with_one_chart_uses_the_width(
    hf: tuple[Server, StreamWriter], open_page: Any
) -> None:
    server, _ = hf
    page, _ = open_page(server, f"project={PROJECT}&run=hfother")
    slot = page.locator('.chart-slot[data-key="eval/loss"]')
    slot.wait_for(timeout=TIMEOUT_MS)
    grid = page.locator('.chart-slot[data-key="eval/loss"] >> xpath=..')
    assert slot.bounding_box()["width"] > 0.9 * grid.bounding_box()["width"]


def test_the_runs_table_leads_with_metrics_and_few_config_columns(
    hf: tuple[Server, StreamWriter], open_page: Any
) -> None:
    server, _ = hf
    page, _ = open_page(server, f"project={PROJECT}")
    page.locator('tr[data-run="hfother"]').wait_for(timeout=TIMEOUT_MS)
    columns = page.eval_on_selector_all(
        "thead th[data-column]", "(ths) => ths.map((t) => t.dataset.column)"
    )
    summary = [c for c in columns if c.startswith("summary:")]
    config = [c for c in columns if c.startswith("config:")]
    assert summary and config
    assert max(columns.index(c) for c in summary) < min(columns.index(c) for c in config)
    assert f"summary:{STEP}" not in summary and "summary:_runtime" not in summary
    # Only the config keys whose values differ between the runs, of 44.
    assert sorted(config) == ["config:learning_rate", "config:per_device_train_batch_size"]

    # The hidden keys are counted over the project's runs once its facets have come.
    more = page.locator(".more-config")
    page.wait_for_function(
        "() => document.querySelector('.more-config').textContent.includes('42 hidden')",
        timeout=TIMEOUT_MS,
    )
    more.click()
    shown = page.eval_on_selector_all("thead th.config", "(ths) => ths.length")
    assert shown == 8
    # A null config value reads null, once its column is shown.
    page.locator("details.columns-picker summary").click()
    page.locator("details.columns-picker label", has_text="pad_token_id").locator("input").check()
    cell = page.locator('tr[data-run="hfother"] td[data-column="config:pad_token_id"]')
    assert cell.inner_text() == "null"


def test_compared_hf_and_lightning_runs_line_up_each_on_its_step_metric(
    hf: tuple[Server, StreamWriter], open_page: Any
) -> None:
    server, _ = hf
    page, _ = open_page(server, f"project={PROJECT}&compare=hfother,ltrun")
    page.wait_for_function(
        """() => [...document.querySelectorAll('.chart')].some((n) =>
            n.__chart.options.title === 'eval/loss' && n.__chart.uplot
            && n.__chart.uplot.data.length === 3
            && n.__chart.uplot.data.slice(1).every((ys) => ys.some((y) => y != null)))""",
        timeout=TIMEOUT_MS,
    )
    chart = chart_data(page)["eval/loss"]
    assert chart["xs"] == [0, 30, 60, 90] and chart["points"] == [4, 4]
    assert "trainer/global_step" not in chart_data(page)


AXIS_MODEL = """async () => {
  const axis = await import('./static/js/axis.js');
  const run = {metric_defs: {
    'eval/*': {step_metric: 'trainer/global_step', summary: null, hidden: false, goal: null},
    'debug/*': {step_metric: null, summary: null, hidden: true, goal: null},
    'x.y': {step_metric: 'my_step', summary: null, hidden: false, goal: null},
  }};
  const keys = ['eval/loss', 'debug/grad', 'trainer/global_step', 'my_step', 'epoch',
                'x.y', 'xzy', 'evalx/loss'];
  return {
    charts: axis.chartKeys(keys, [run]),
    x: axis.defaultX([run]),
    none: axis.defaultX([{}]),
    metric: axis.xMetric('metric:a/b'),
  };
}"""


def test_the_axis_rules(hf: tuple[Server, StreamWriter], open_page: Any) -> None:
    """Globs match whole names ("." is no wildcard), hidden and step metrics are no charts."""
    server, _ = hf
    page, _ = open_page(server, f"project={PROJECT}")
    assert page.evaluate(AXIS_MODEL) == {
        "charts": ["eval/loss", "x.y", "xzy", "evalx/loss"],
        "x": "metric:my_step",
        "none": "step",
        "metric": "a/b",
    }

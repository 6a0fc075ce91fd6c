"""The runs table at a few hundred runs, in a real browser: it asks the server for one
page at a time, and the server sorts and filters (a sort by a summary metric brings
runs from other pages to the first one, which sorting the shown rows could not)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from waddle.web.api import DEFAULT_RUNS_PAGE

from .conftest import Server, wait_for_runs

TIMEOUT_MS = 15_000
RUNS = 250
PAGE = 100  # PAGE_SIZE of static/js/runs_table.js
PROJECT = "many"
DASH = "\N{EN DASH}"  # between the first and last row of the count

# A child process writes the runs one after the other (started_at grows with i); the
# score is a permutation of 0..RUNS-1 that puts its lowest and highest far from the
# newest runs, which the first page shows by default.
PRODUCER = r"""
import sys
import waddle
root, runs = sys.argv[1], int(sys.argv[2])
for i in range(runs):
    run = waddle.init(project="many", name=f"run-{i:03d}", root=root, system_metrics=False,
                      config={"lr": [1e-3, 1e-2][i % 2]}, tags=["many"])
    run.log({"loss": 1.0 / (i + 1)})
    run.summary["score"] = (i * 37 + 125) % runs
    run.finish()
"""


def score(i: int) -> int:
    return (i * 37 + 125) % RUNS


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, int]]]:
    """A server over RUNS runs of one project, and the index i of each run by its id."""
    root = tmp_path_factory.mktemp("paging") / "root"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_") and k != "RANK"}
    subprocess.run(
        [sys.executable, "-c", PRODUCER, str(root), str(RUNS)],
        env=env,
        cwd=root.parent,
        capture_output=True,
        timeout=120,
        check=True,
    )
    server = Server(root).start()
    try:
        rows = wait_for_runs(server, PROJECT, RUNS)
        yield server, {row["run_id"]: int(row["name"].split("-")[1]) for row in rows}
    finally:
        server.stop()


def shown(page: Any, ids: dict[str, int]) -> list[int]:
    """The index of each run on the page, top to bottom, once the table has settled."""
    page.wait_for_selector("table.runs:not([data-loading])", state="attached", timeout=TIMEOUT_MS)
    return [ids[str(r.get_attribute("data-run"))] for r in page.locator("tbody tr[data-run]").all()]


def count(page: Any) -> str:
    return str(page.locator(".run-count").inner_text())


def test_the_table_pages_sorts_and_filters_on_the_server(
    many: tuple[Server, dict[str, int]], open_page: Any
) -> None:
    server, ids = many
    assert PAGE == DEFAULT_RUNS_PAGE  # the page the API gives when none is asked for
    page, _ = open_page(server, f"project={PROJECT}")
    requests: list[dict[str, list[str]]] = []
    page.on(
        "request",
        lambda r: requests.append(parse_qs(urlsplit(r.url).query)) if "/api/runs?" in r.url else 0,
    )
    page.wait_for_selector("table.runs tbody tr[data-run]", timeout=TIMEOUT_MS)
    newest = list(range(RUNS - 1, -1, -1))
    assert shown(page, ids) == newest[:PAGE]
    assert count(page) == f"1{DASH}{PAGE} of {RUNS} runs"
    assert page.locator("button.page-previous").is_disabled()

    # Next and previous pages, each a request for one page.
    page.click("button.page-next")
    assert shown(page, ids) == newest[PAGE : 2 * PAGE]
    page.click("button.page-next")
    assert shown(page, ids) == newest[2 * PAGE :]
    assert count(page) == f"{2 * PAGE + 1}{DASH}{RUNS} of {RUNS} runs"
    assert page.locator("button.page-next").is_disabled()
    page.click("button.page-previous")
    assert shown(page, ids) == newest[PAGE : 2 * PAGE]

    # A sort by the summary metric starts again at the first page, sorted over all runs.
    by_score = sorted(range(RUNS), key=score)
    page.locator('th[data-column="summary:score"]').click()
    assert shown(page, ids) == by_score[:PAGE]
    assert score(shown(page, ids)[0]) == 0
    page.locator('th[data-column="summary:score"]').click()
    assert shown(page, ids) == by_score[::-1][:PAGE]
    page.click("button.page-next")
    assert shown(page, ids) == by_score[::-1][PAGE : 2 * PAGE]

    # A filter is the server's too: names run-020 to run-029 (run ids hold no hyphen),
    # in the chosen order, from the first page again.
    page.fill("input.text-filter", "run-02")
    expected = sorted(range(20, 30), key=score, reverse=True)
    assert shown(page, ids) == expected
    assert count(page) == f"1{DASH}10 of 10 runs"

    # Never more than a page asked for at once, and the sort and filter were sent.
    assert requests and all(int(q["limit"][0]) <= PAGE for q in requests)
    assert {"summary:score"} <= {q["sort"][0] for q in requests}
    assert ["run-02"] in [q.get("q") for q in requests]


def test_the_menus_offer_every_run_not_just_the_page(
    many: tuple[Server, dict[str, int]], open_page: Any
) -> None:
    server, ids = many
    page, _ = open_page(server, f"project={PROJECT}")
    page.wait_for_selector("table.runs tbody tr[data-run]", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => [...document.querySelectorAll('select.config-key-filter option')]"
        ".some((o) => o.value === 'lr')",
        timeout=TIMEOUT_MS,
    )
    page.select_option("select.config-key-filter", "lr")
    page.fill("input.config-value-filter", ">0.005")
    rows = shown(page, ids)
    assert len(rows) == PAGE and all(i % 2 == 1 for i in rows)
    assert count(page) == f"1{DASH}{PAGE} of {RUNS // 2} runs"

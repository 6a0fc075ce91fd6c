"""Media in a real browser: images (pixels, the step slider, captions, several runs side
by side), the histogram heat-map (pixels), the table viewer paged, sorted and filtered by
the server with images in cells, files and artifact lineage, live updates, and logged
SVG and HTML files that stay inert.

Runs are written by the real producer in a child process, read by a real ``waddle serve``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import waddle
import waddle.producer.api

from .conftest import Server, chart_data, get_json, wait_for_runs

TIMEOUT_MS = 15_000
PROJECT = "media"
# Colours of the images of key "samples": two per step, per run.
PICTURES = [[(255, 0, 0), (0, 0, 255)], [(0, 255, 0), (255, 255, 0)], [(0, 0, 255), (255, 0, 255)]]
OTHER = [[(0, 255, 255), (0, 0, 0)], [(128, 0, 0), (0, 128, 0)], [(0, 0, 128), (128, 128, 0)]]
TABLE_ROWS = 30
PICTURE_CELL = (255, 200, 0)
SVG = (
    "<svg xmlns=\"http://www.w3.org/2000/svg\" onload=\"localStorage.setItem('pwned', 'svg')\">"
    "<script>localStorage.setItem('pwned', 'svg'); window.top.pwned = 1;</script></svg>"
)
HTML = (
    "<html><body><script>localStorage.setItem('pwned', 'html'); "
    "if (window.opener) window.opener.pwned = 1; window.top.pwned = 1;</script></body></html>"
)
CELL_SVG = "<svg onload=\"localStorage.setItem('pwned', 'cell')\"></svg>"

MEDIA_SEED = """
import json, sys
import numpy as np
import waddle

root = sys.argv[1]
pictures, other, rows, cell, picture_cell = [json.loads(a) for a in sys.argv[2:]]

def solid(colour):
    image = np.zeros((8, 12, 3), np.uint8)
    image[:] = colour
    return image

def log_samples(name, colours):
    run = waddle.init(project="media", name=name, root=root, system_metrics=False)
    edges = np.linspace(-1.0, 1.0, 11)
    for step, (a, b) in enumerate(colours):
        counts = np.zeros(10, int)
        counts[step * 4] = 50  # step 0: the lowest bin; step 2: a high one
        run.log(
            {
                "samples": [
                    waddle.Image(solid(a), caption=f"{name} {step} a"),
                    waddle.Image(solid(b), caption=f"{name} {step} b"),
                ],
                "weights": waddle.Histogram(np_histogram=(counts, edges)),
                "loss": 1.0 / (step + 1),
            },
            step=step,
        )
    return run

run = log_samples("pictures", pictures)
table = waddle.Table(columns=["id", "label", "score", "picture", "note"])
for i in range(rows):
    table.add_data(
        i,
        "cat" if i % 3 == 0 else "dog",
        (i * 7) % rows / rows,
        waddle.Image(solid(picture_cell)) if i < 3 else None,
        cell if i == 1 else "",
    )
run.log({"predictions": table}, step=3)
run.finish()
second = log_samples("other", other)
second.finish()
print(json.dumps({"pictures": run.id, "other": second.id}), flush=True)
"""


ARTIFACT_SEED = """
import json, sys
from pathlib import Path
import waddle

root, folder, svg, html = sys.argv[1:]
folder = Path(folder)
(folder / "evil.svg").write_text(svg)
(folder / "evil.html").write_text(html)
producer = waddle.init(project="media", name="producer", root=root, system_metrics=False)
producer.save(str(folder / "evil.svg"), base_path=str(folder))
producer.save(str(folder / "evil.html"), base_path=str(folder))
for content in ("first", "second"):
    (folder / "data.txt").write_text(content)
    artifact = waddle.Artifact("dataset", type="dataset")
    artifact.add_file(str(folder / "data.txt"))
    producer.log_artifact(artifact, aliases=[content])
producer.finish()
consumer = waddle.init(project="media", name="consumer", root=root, system_metrics=False)
consumer.use_artifact("dataset:second")
consumer.finish()
print(json.dumps({"producer": producer.id, "consumer": consumer.id}), flush=True)
"""


def run_script(script: str, *args: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_") and k != "RANK"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def wait_for_media(server: Server, run_id: str, keys: set[str]) -> list[dict[str, Any]]:
    """The media keys of a run once the server's tables hold all of ``keys``."""
    from tests.helpers import eventually

    def check() -> list[dict[str, Any]] | None:
        body = get_json(server, f"/api/runs/{run_id}/media")
        return body if body is not None and keys <= {m["key"] for m in body} else None

    return eventually(check, what=f"media {sorted(keys)} of {run_id}")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server over two runs with images, histograms and (one of them) a table."""
    root = tmp_path_factory.mktemp("media") / "root"
    args = [json.dumps(v) for v in (PICTURES, OTHER, TABLE_ROWS, CELL_SVG, PICTURE_CELL)]
    ids = run_script(MEDIA_SEED, str(root), *args)
    server = Server(root).start()
    wait_for_runs(server, PROJECT, 2)
    wait_for_media(server, ids["pictures"], {"samples", "weights", "predictions"})
    wait_for_media(server, ids["other"], {"samples", "weights"})
    yield server, ids
    server.stop()


# An image element's pixel at its centre, read through a canvas: [r, g, b].
IMG_PIXEL = """(img) => {
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const x = Math.floor(canvas.width / 2), y = Math.floor(canvas.height / 2);
  return Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
}"""
IMAGES_LOADED = """(selector) => {
  const images = [...document.querySelectorAll(selector)];
  return images.length > 0 && images.every((img) => img.complete && img.naturalWidth > 0);
}"""


def image_colours(page: Any, selector: str) -> list[tuple[int, ...]]:
    """The centre pixel of every image under ``selector``, once all have loaded."""
    page.wait_for_function(IMAGES_LOADED, arg=f"{selector} img.media-image", timeout=TIMEOUT_MS)
    images = page.locator(f"{selector} img.media-image")
    return [tuple(images.nth(i).evaluate(IMG_PIXEL)) for i in range(images.count())]


def panel(key: str) -> str:
    return f'.media-panel[data-key="{key}"]'


def test_images_with_step_slider_and_captions(media: Any, open_page: Any, screenshot: Any) -> None:
    server, ids = media
    page, _ = open_page(server, f"project={PROJECT}&run={ids['pictures']}")
    samples = panel("samples")
    page.wait_for_selector(f'{samples}[data-step="2"]', timeout=TIMEOUT_MS)
    # The newest step is shown first: both of its images, side by side, with captions.
    assert image_colours(page, samples) == PICTURES[2]
    captions = page.locator(f"{samples} figcaption").all_inner_texts()
    assert captions == ["pictures 2 a", "pictures 2 b"]
    boxes = [page.locator(f"{samples} figure").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["x"] < boxes[1]["x"]
    # Every image is served from /blobs, as an image, never through HTML.
    sources = page.eval_on_selector_all(f"{samples} img", "(nodes) => nodes.map((n) => n.src)")
    assert all("/blobs/" in src for src in sources)

    # The slider moves through the steps.
    slider = page.locator(f"{samples} input.step-slider")
    slider.fill("0")
    page.wait_for_selector(f'{samples}[data-step="0"]', timeout=TIMEOUT_MS)
    assert image_colours(page, samples) == PICTURES[0]
    assert page.locator(f"{samples} figcaption").all_inner_texts()[0] == "pictures 0 a"
    slider.fill("1")
    page.wait_for_selector(f'{samples}[data-step="1"]', timeout=TIMEOUT_MS)
    assert image_colours(page, samples) == PICTURES[1]

    # A typed value next to a number: the number is charted, the images are not.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].some((n) => n.__chart.uplot)",
        timeout=TIMEOUT_MS,
    )
    charts = chart_data(page)
    assert "samples" not in charts and "weights" not in charts
    # In the summary, a typed value reads as what it is, not as its JSON.
    summary = dict(
        page.eval_on_selector_all(
            "#summary table.kv tr",
            "(rows) => rows.map((r) => [r.cells[0].textContent, r.cells[1].textContent])",
        )
    )
    assert summary["samples"] == "2 images"
    assert summary["weights"] == "histogram (10 bins)"
    page.locator("#media").scroll_into_view_if_needed()
    screenshot(page, "media")


# The rows (y, in canvas pixels) where a heat-map column holds its darkest cells.
DARK_ROWS = """([fraction]) => {
  const canvas = document.querySelector('.media-panel[data-key="weights"] canvas.heatmap');
  const ratio = canvas.width / canvas.clientWidth;
  const left = 52 * ratio, width = canvas.width - 60 * ratio;
  const x = Math.round(left + width * fraction);
  const data = canvas.getContext('2d').getImageData(x, 0, 1, canvas.height).data;
  const rows = [];
  for (let y = 0; y < canvas.height; y += 1) {
    const [r, g, b] = [data[y * 4], data[y * 4 + 1], data[y * 4 + 2]];
    if (Math.abs(r - 24) + Math.abs(g - 64) + Math.abs(b - 160) < 30) rows.push(y);
  }
  return rows;
}"""


def test_histograms_draw_a_heat_map(media: Any, open_page: Any) -> None:
    server, ids = media
    page, _ = open_page(server, f"project={PROJECT}&run={ids['pictures']}")
    page.wait_for_selector(f'{panel("weights")}[data-steps="3"]', timeout=TIMEOUT_MS)
    # Step 0 (the left column) has all its counts in the lowest bin, step 2 (the right
    # column) in a high one: the darkest cells sit low on the left and high on the right.
    first = page.evaluate(DARK_ROWS, [1 / 6])
    last = page.evaluate(DARK_ROWS, [5 / 6])
    assert first and last
    assert min(first) > max(last)
    # Pointing at a cell names its step, bin and count.
    box = page.locator(f"{panel('weights')} canvas.heatmap").bounding_box()
    page.mouse.move(
        box["x"] + 52 + (box["width"] - 60) / 6, box["y"] + 8 + (box["height"] - 30) * 0.95
    )
    page.wait_for_function(
        "([sel, text]) => document.querySelector(sel).textContent === text",
        arg=[
            f"{panel('weights')} .heatmap-readout",
            "step 0 \N{MIDDLE DOT} [-1, -0.8) \N{MIDDLE DOT} 50",
        ],
        timeout=TIMEOUT_MS,
    )


def table_rows(page: Any) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{panel('predictions')} tbody tr",
        "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))",
    )


def test_table_viewer_pages_sorts_and_filters_on_the_server(media: Any, open_page: Any) -> None:
    server, ids = media
    page, _ = open_page(server, f"project={PROJECT}&run={ids['pictures']}")
    table = panel("predictions")
    page.wait_for_selector(f'{table}[data-total="{TABLE_ROWS}"]', timeout=TIMEOUT_MS)
    assert [row[0] for row in table_rows(page)] == [str(i) for i in range(20)]
    assert page.locator(f"{table} .page-position").inner_text() == f"1\N{EN DASH}20 of {TABLE_ROWS}"
    # Image cells are images (pixels); a cell holding SVG markup is text.
    assert image_colours(page, f"{table} tbody") == [PICTURE_CELL] * 3
    assert table_rows(page)[1][4] == CELL_SVG

    page.locator(f"{table} .page-next").click()
    page.wait_for_selector(f'{table}[data-offset="20"]', timeout=TIMEOUT_MS)
    assert [row[0] for row in table_rows(page)] == [str(i) for i in range(20, TABLE_ROWS)]

    # Sorting is the server's: page one of a descending sort starts at the largest score
    # of all rows, and page two goes on below page one (scores are distinct).
    by_score = sorted(range(TABLE_ROWS), key=lambda i: (i * 7) % TABLE_ROWS, reverse=True)
    header = page.locator(f'{table} th[data-column="score"]')
    header.click()
    page.wait_for_selector(f'{table} th[data-column="score"][data-sort="asc"]')
    assert table_rows(page)[0][0] == str(by_score[-1])
    header.click()
    page.wait_for_selector(f'{table} th[data-column="score"][data-sort="desc"]')
    assert [int(row[0]) for row in table_rows(page)] == by_score[:20]
    page.locator(f"{table} .page-next").click()
    page.wait_for_selector(f'{table}[data-offset="20"]', timeout=TIMEOUT_MS)
    assert [int(row[0]) for row in table_rows(page)] == by_score[20:]

    # The filter is the server's too: only the rows that match, counted by the server.
    page.locator(f"{table} input.table-filter").fill("cat")
    cats = len([i for i in range(TABLE_ROWS) if i % 3 == 0])
    page.wait_for_selector(f'{table}[data-total="{cats}"]', timeout=TIMEOUT_MS)
    assert {row[1] for row in table_rows(page)} == {"cat"}
    assert not page.evaluate("() => localStorage.getItem('pwned') || window.pwned")


def test_compare_shows_images_of_each_run_side_by_side(media: Any, open_page: Any) -> None:
    server, ids = media
    runs = [ids["pictures"], ids["other"]]
    page, _ = open_page(server, f"project={PROJECT}&compare={','.join(runs)}")
    samples = panel("samples")
    page.wait_for_selector(f'{samples}[data-step="2"]', timeout=TIMEOUT_MS)
    page.wait_for_function(
        "([sel]) => document.querySelectorAll(`${sel} img.media-image`).length === 4",
        arg=[samples],
        timeout=TIMEOUT_MS,
    )
    for run_id, colours in zip(runs, (PICTURES, OTHER), strict=True):
        assert image_colours(page, f'{samples} [data-run="{run_id}"]') == colours[2]
    page.locator(f"{samples} input.step-slider").fill("0")
    page.wait_for_selector(f'{samples}[data-step="0"]', timeout=TIMEOUT_MS)
    for run_id, colours in zip(runs, (PICTURES, OTHER), strict=True):
        assert image_colours(page, f'{samples} [data-run="{run_id}"]') == colours[0]
    left, right = (page.locator(f'{samples} [data-run="{r}"]').bounding_box() for r in runs)
    assert left["y"] == right["y"] and left["x"] < right["x"]


# Pure modules, run in the page: what the panels would draw for values no producer makes.
SAFE_ELEMENTS = """async () => {
  const { mediaElement } = await import('./static/js/media_panels.js');
  const tags = {};
  for (const format of ['png', 'jpeg', 'svg', 'svg+xml', 'html', '']) {
    const node = mediaElement({ kind: 'image', format, sha256: 'ab'.repeat(32), size: 10 });
    tags[format] = [node.tagName, node.getAttribute('download') !== null];
  }
  return tags;
}"""
FOLD_MEDIA = """async () => {
  const { mediaValues } = await import('./static/js/fold.js');
  const image = { _type: 'image', sha256: 'ab', format: 'png', width: 2, height: 2 };
  return mediaValues({
    type: 'metrics', step: 7,
    data: { loss: 0.5, one: image, many: [image, { ...image, sha256: 'cd' }],
            hist: { _type: 'histogram', bins: [0, 1], counts: [4] },
            odd: { _type: 'unknown' }, plain: { a: 1 } },
  });
}"""


def test_only_image_formats_become_images(server: Server, open_page: Any) -> None:
    page, _ = open_page(server, "")
    tags = page.evaluate(SAFE_ELEMENTS)
    assert tags["png"] == ["IMG", False] and tags["jpeg"] == ["IMG", False]
    for format in ("svg", "svg+xml", "html", ""):
        assert tags[format] == ["A", True], format


def test_typed_values_are_read_from_metrics_events(server: Server, open_page: Any) -> None:
    page, _ = open_page(server, "")
    found = {entry["key"]: entry for entry in page.evaluate(FOLD_MEDIA)}
    assert set(found) == {"one", "many", "hist"}
    assert [v["sha256"] for v in found["many"]["values"]] == ["ab", "cd"]
    assert [v["idx"] for v in found["many"]["values"]] == [0, 1]
    assert found["one"]["values"][0] == {
        "sha256": "ab",
        "format": "png",
        "width": 2,
        "height": 2,
        "step": 7,
        "idx": 0,
        "kind": "image",
    }
    assert found["hist"]["kind"] == "histogram"
    assert found["hist"]["values"][0]["counts"] == [4]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server over a run that saved an SVG and an HTML file and logged two versions of
    an artifact, and a run that used the second."""
    base = tmp_path_factory.mktemp("artifacts")
    (base / "files").mkdir()
    ids = run_script(ARTIFACT_SEED, str(base / "root"), str(base / "files"), SVG, HTML)
    server = Server(base / "root").start()
    wait_for_runs(server, PROJECT, 2)
    yield server, ids
    server.stop()


def test_files_and_artifact_lineage(artifacts: Any, open_page: Any, screenshot: Any) -> None:
    server, ids = artifacts
    page, _ = open_page(server, f"project={PROJECT}&run={ids['producer']}")
    lineage = 'table.lineage[data-artifact="dataset"]'
    page.wait_for_selector(f'{lineage} tr[data-version="1"]', timeout=TIMEOUT_MS)
    paths = page.eval_on_selector_all(
        "table.run-files tbody tr", "(rows) => rows.map((r) => r.dataset.path)"
    )
    assert sorted(paths) == ["evil.html", "evil.svg"]
    versions = page.eval_on_selector_all(
        f"{lineage} tbody tr", "(rows) => rows.map((r) => r.dataset.version)"
    )
    assert versions == ["0", "1"]
    produced = page.locator(f"{lineage} td.produced-by").all_inner_texts()
    assert produced == ["this run", "this run"]
    used = page.locator(f'{lineage} tr[data-version="1"] td.used-by a.run-link')
    assert used.get_attribute("data-run") == ids["consumer"]
    assert not page.locator(f'{lineage} tr[data-version="0"] td.used-by a').count()
    page.locator("#artifacts").scroll_into_view_if_needed()
    screenshot(page, "artifacts")

    # The consumer's page links back to the run that produced what it used.
    used.click()
    page.wait_for_function("([id]) => location.hash.includes(`run=${id}`)", arg=[ids["consumer"]])
    back = page.locator(f'{lineage} tr[data-version="1"] td.produced-by a.run-link')
    back.wait_for(timeout=TIMEOUT_MS)
    assert back.get_attribute("data-run") == ids["producer"]


def test_logged_svg_and_html_stay_inert(artifacts: Any, open_page: Any) -> None:
    server, ids = artifacts
    page, watch = open_page(server, f"project={PROJECT}&run={ids['producer']}")
    page.wait_for_selector("table.run-files a.blob-link", timeout=TIMEOUT_MS)
    for name in ("evil.svg", "evil.html"):
        link = page.locator(f'table.run-files tr[data-path="{name}"] a.blob-link')
        assert link.get_attribute("download") == name
        # Opened from the dashboard, the file is saved, not shown.
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename == name
        # Even opened on its own (a new tab at its address), it is a download, not a page.
        tab = page.context.new_page()
        tab.on("dialog", lambda dialog: (watch.dialogs.append(dialog.message), dialog.dismiss()))
        with tab.expect_download():
            try:
                tab.goto(link.evaluate("(a) => a.href"))
            except Exception as error:  # Playwright: "Download is starting"
                assert "Download is starting" in str(error)
        tab.close()
    assert page.evaluate("() => document.querySelectorAll('iframe, object, embed').length") == 0
    assert page.evaluate("() => [localStorage.getItem('pwned'), window.pwned ?? null]") == [
        None,
        None,
    ]


def solid(colour: tuple[int, int, int]) -> Any:
    import numpy as np

    image = np.zeros((6, 6, 3), np.uint8)
    image[:] = colour
    return image


def test_a_live_image_refreshes_its_panel(live_server: Server, open_page: Any) -> None:
    run = waddle.init(project="live-media", root=live_server.root, system_metrics=False)
    run.log({"loss": 1.0, "frames": waddle.Image(solid((255, 0, 0)), caption="first")}, step=0)
    wait_for_runs(live_server, "live-media", 1)
    wait_for_media(live_server, run.id, {"frames"})
    page, _ = open_page(live_server, f"project=live-media&run={run.id}")
    page.wait_for_selector('.live-status[data-status="live"]', timeout=TIMEOUT_MS)
    frames = panel("frames")
    page.wait_for_selector(f'{frames}[data-step="0"]', timeout=TIMEOUT_MS)
    assert image_colours(page, frames) == [(255, 0, 0)]

    # Logged while the page is open: the panel moves to the new step, no reload.
    caption = "<img src=x onerror=alert(1)>"
    run.log({"loss": 0.5, "frames": waddle.Image(solid((0, 0, 255)), caption=caption)}, step=5)
    page.wait_for_selector(f'{frames}[data-step="5"]', timeout=TIMEOUT_MS)
    assert image_colours(page, frames) == [(0, 0, 255)]
    assert page.locator(f"{frames} figcaption").inner_text() == caption
    # Histograms and tables follow too.
    edges = [0.0, 1.0, 2.0]
    for step in (5, 6):
        run.log({"grads": waddle.Histogram(np_histogram=([step, 1], edges))}, step=step)
    page.wait_for_selector(f'{panel("grads")}[data-steps="2"]', timeout=TIMEOUT_MS)
    for step, rows in ((5, 2), (6, 3)):
        table = waddle.Table(columns=["n"], data=[[n] for n in range(rows)])
        run.log({"results": table}, step=step)
    page.wait_for_selector(f'{panel("results")}[data-total="3"]', timeout=TIMEOUT_MS)
    # A key never seen before gets a panel of its own; the number beside it is charted.
    run.log({"loss": 0.25, "fresh": waddle.Image(solid((0, 255, 0)))}, step=6)
    page.wait_for_selector(f'{panel("fresh")}[data-step="6"]', timeout=TIMEOUT_MS)
    assert image_colours(page, panel("fresh")) == [(0, 255, 0)]
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart')].some((n) => n.__chart.options.title"
        " === 'loss' && n.__chart.uplot && n.__chart.uplot.data[0].includes(6))",
        timeout=TIMEOUT_MS,
    )
    assert "frames" not in chart_data(page)
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1


def test_compare_follows_live_images_of_each_run(live_server: Server, open_page: Any) -> None:
    runs = [
        waddle.init(
            project="live-compare", root=live_server.root, system_metrics=False, reinit="create_new"
        )
        for _ in range(2)
    ]
    for run, colour in zip(runs, ((255, 0, 0), (0, 255, 0)), strict=True):
        run.log({"frames": waddle.Image(solid(colour))}, step=0)
        wait_for_media(live_server, run.id, {"frames"})
    wait_for_runs(live_server, "live-compare", 2)
    page, _ = open_page(live_server, f"project=live-compare&compare={runs[0].id},{runs[1].id}")
    page.wait_for_selector('.live-status[data-status="live"]', timeout=TIMEOUT_MS)
    frames = panel("frames")
    page.wait_for_selector(f'{frames}[data-step="0"]', timeout=TIMEOUT_MS)

    # Only the second run logs step 1: the panel moves there, the first run has no image.
    runs[1].log({"frames": waddle.Image(solid((0, 0, 255)))}, step=1)
    page.wait_for_selector(f'{frames}[data-step="1"]', timeout=TIMEOUT_MS)
    assert image_colours(page, f'{frames} [data-run="{runs[1].id}"]') == [(0, 0, 255)]
    first = page.locator(f'{frames} [data-run="{runs[0].id}"]')
    assert not first.locator("img").count()
    assert first.locator(".muted").inner_text() == "no image at this step"


def test_files_and_artifacts_appear_live(live_server: Server, open_page: Any) -> None:
    run = waddle.init(project="live-files", root=live_server.root, system_metrics=False)
    run.log({"loss": 1.0}, step=0)
    wait_for_runs(live_server, "live-files", 1)
    page, _ = open_page(live_server, f"project=live-files&run={run.id}")
    page.wait_for_selector('.live-status[data-status="live"]', timeout=TIMEOUT_MS)
    assert page.locator("#artifacts").is_hidden()

    folder = live_server.root.parent / "files"
    folder.mkdir()
    (folder / "notes.txt").write_text("saved while the page is open")
    run.save(str(folder / "notes.txt"), base_path=str(folder))
    artifact = waddle.Artifact("weights", type="model")
    artifact.add_file(str(folder / "notes.txt"))
    run.log_artifact(artifact)
    page.wait_for_selector('table.run-files tr[data-path="notes.txt"]', timeout=TIMEOUT_MS)
    page.wait_for_selector(
        'table.lineage[data-artifact="weights"] tr[data-version="0"]', timeout=TIMEOUT_MS
    )
    assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1

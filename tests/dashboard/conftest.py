"""Fixtures of the dashboard tests: a real ``waddle serve`` on a loopback port, runs
written by the real producer, and Debian's chromium driven by Playwright.

Every page is watched: a request to any host other than the server is blocked and
recorded, and so are JavaScript dialogs and uncaught page errors; a test that caused one
fails at teardown. Screenshots go to ``$WADDLE_SCREENSHOTS`` when it is set (the docs
use ``docs/screenshots``), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import waddle.producer.api
from tests.helpers import eventually

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the dashboard tests need Playwright: pip install -e '.[test]'"
)

HERE = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("WADDLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
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
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
VIEWPORT = {"width": 1360, "height": 900}
# Read at import: the suite's autouse fixture clears WADDLE_* and changes the working
# directory before each test, so a relative docs/screenshots is resolved now.
SCREENSHOTS = os.environ.get("WADDLE_SCREENSHOTS")
SCREENSHOTS_DIR = Path(SCREENSHOTS).resolve() if SCREENSHOTS else None


@dataclass
class Server:
    """A ``waddle serve`` child process on a loopback port."""

    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> Server:
        """Start (or restart, on the same port) and wait for the URL it prints."""
        command = [sys.executable, "-m", "waddle", "serve"]
        command += ["--dir", str(self.root), "--port", str(self.port)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_")}
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            line = self.proc.stdout.readline() if ready else b""
            if ready and not line:
                break
            if b" at http://" in line:
                self.url = line.decode().rsplit(" at ", 1)[1].strip().split("?", 1)[0]
                self.port = urlsplit(self.url).port or 80
                return self
        self.stop()
        pytest.fail("waddle serve printed no URL")

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@dataclass
class Watch:
    """What a page did that it must not: foreign requests, dialogs, uncaught errors."""

    server: str
    foreign: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def is_foreign(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme not in ("data", "blob", "about") and parts.netloc != self.server


def get_json(server: Server, path: str) -> Any:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return json.loads(body) if response.status == 200 else None
    finally:
        connection.close()


def wait_for_runs(server: Server, project: str, count: int) -> list[dict[str, Any]]:
    """The project's runs once the server's DuckDB writer holds ``count`` of them."""

    def check() -> list[dict[str, Any]] | None:
        body = get_json(server, f"/api/runs?project={project}&limit=1000")
        return body["runs"] if body and len(body["runs"]) >= count else None

    return eventually(check, what=f"{count} runs of {project} in the tables")


@pytest.fixture(scope="package")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A Waddle folder with the runs of ``seed.py``, and their ids by name."""
    root = tmp_path_factory.mktemp("dashboard") / "root"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WADDLE_") and k != "RANK"}
    done = subprocess.run(
        [sys.executable, str(HERE / "seed.py"), str(root)],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    return root, json.loads(done.stdout.decode().strip().splitlines()[-1])


@pytest.fixture(scope="package")
def server(seeded: tuple[Path, dict[str, str]]) -> Iterator[Server]:
    """One server over the seeded runs, for the tests that only read."""
    root, ids = seeded
    server = Server(root).start()
    wait_for_runs(server, "vision", len(ids))
    yield server
    server.stop()


@pytest.fixture
def live_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A server of the test's own (it may restart it), over a folder that the test's
    in-process runs write into; the runs left open are finished first."""
    # In-process runs must leave pytest's signal handlers and atexit alone.
    monkeypatch.setattr(waddle.producer.api, "_hooks_installed", True)
    monkeypatch.setattr(waddle.producer.api, "_live", [])
    server = Server(tmp_path / "root").start()
    yield server
    for run in list(waddle.producer.api._live):
        run.finish()
    server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Chromium, for this package only: while Playwright's sync API runs, asyncio.run()
    refuses to start, so it must be gone before other packages' tests."""
    if not Path(CHROMIUM).exists():
        message = f"no chromium at {CHROMIUM}: apt-get install chromium (or set WADDLE_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., tuple[Any, Watch]]]:
    """``open_page(server, fragment, stale_after=None)``: a watched page on the server."""
    contexts = []
    watches: list[Watch] = []

    def open_(server: Server, fragment: str = "", stale_after: float | None = None):
        context = browser.new_context(viewport=VIEWPORT, service_workers="block")
        contexts.append(context)
        watch = Watch(server.netloc)
        watches.append(watch)

        def route(route: Any) -> None:
            if watch.is_foreign(route.request.url):
                watch.foreign.append(route.request.url)
                route.abort()
            else:
                route.continue_()

        context.route("**/*", route)
        if stale_after is not None:
            context.add_init_script(
                f"localStorage.setItem('waddle.staleAfterSeconds', '{stale_after}')"
            )
        page = context.new_page()
        page.on("dialog", lambda dialog: (watch.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: watch.errors.append(str(error)))
        page.on(
            "websocket",
            lambda ws: watch.foreign.append(ws.url) if watch.is_foreign(ws.url) else None,
        )
        page.on(
            "request",
            lambda request: (
                watch.foreign.append(request.url) if watch.is_foreign(request.url) else None
            ),
        )
        page.goto(f"{server.url}#{fragment}")
        return page, watch

    yield open_
    for context in contexts:
        context.close()
    for watch in watches:
        assert not watch.foreign, f"requests to other hosts: {sorted(set(watch.foreign))}"
        assert not watch.dialogs, f"dialogs opened: {watch.dialogs}"
        assert not watch.errors, f"errors in the page: {watch.errors}"


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """``screenshot(page, name)`` saves ``name.png`` (see the module docstring for where)."""
    folder = SCREENSHOTS_DIR or tmp_path
    folder.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        return path

    return take


# JavaScript run in the page: the charts' uPlot data, and how many pixels of a colour a
# chart's canvas holds (proof that a curve was drawn, not just that an element exists).
CHART_DATA = """() => [...document.querySelectorAll('.chart')].map((node) => {
  const u = node.__chart.uplot;
  return {
    key: node.__chart.options.title,
    series: u ? u.series.length - 1 : 0,
    points: u ? u.data.slice(1).map((ys) => ys.filter((y) => y != null).length) : [],
    xs: u ? Array.from(u.data[0]) : [],
  };
})"""

COLOR_PIXELS = """([key, color]) => {
  const charts = [...document.querySelectorAll('.chart')];
  const node = charts.find((n) => n.__chart.options.title === key);
  const canvas = node.querySelector('canvas');
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  let count = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (Math.abs(pixels[i] - r) + Math.abs(pixels[i + 1] - g) + Math.abs(pixels[i + 2] - b) < 60
        && pixels[i + 3] > 200) count += 1;
  }
  return count;
}"""


def chart_data(page: Any) -> dict[str, dict[str, Any]]:
    return {chart["key"]: chart for chart in page.evaluate(CHART_DATA)}


def color_pixels(page: Any, key: str, color: str) -> int:
    return page.evaluate(COLOR_PIXELS, [key, color])


def run_color(page: Any, selector: str) -> str:
    """The colour of a swatch as #rrggbb."""
    rgb = page.eval_on_selector(selector, "(node) => getComputedStyle(node).backgroundColor")
    r, g, b = (int(part) for part in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3])
    return f"#{r:02x}{g:02x}{b:02x}"

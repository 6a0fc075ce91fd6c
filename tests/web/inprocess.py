"""A real ``waddle serve`` (uvicorn on a loopback port) inside the test process, for
tests that must look at the server's own objects: the broadcaster, its subscribers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

import waddle.web.app
from tests.helpers import eventually
from tests.web.conftest import Address
from waddle.consumers.broadcast import Broadcaster
from waddle.web.server import serve
from waddle.web.settings import Settings

STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass
class InProcessServer(Address):
    """The app ``serve`` built and the address it printed."""

    app: Starlette
    url: str

    @property
    def broadcaster(self) -> Broadcaster:
        return self.app.state.broadcaster


@contextmanager
def in_process_server(
    root: Path, monkeypatch: pytest.MonkeyPatch, **settings: Any
) -> Iterator[InProcessServer]:
    """Run ``waddle.web.server.serve`` in a thread (port 0) and stop it on exit.

    ``serve`` builds its app with ``waddle.web.app.create_app``; the test keeps a
    reference to that app by wrapping the function, so the server is the one
    ``waddle serve`` runs, not a copy of its configuration.
    """
    built: list[Starlette] = []
    create_app = waddle.web.app.create_app

    def keep(config: Settings) -> Starlette:
        built.append(create_app(config))
        return built[-1]

    monkeypatch.setattr(waddle.web.app, "create_app", keep)
    announced: list[str] = []
    ready = threading.Event()
    stop = threading.Event()

    def announce(line: str) -> None:
        announced.append(line.rsplit(" at ", 1)[1].split("?", 1)[0])
        ready.set()

    thread = threading.Thread(
        target=serve,
        args=(Settings(root=root, port=0, **settings), announce, stop),
        name="in-process-serve",
    )
    thread.start()
    try:

        def started() -> bool:
            assert thread.is_alive(), "the server thread ended before it started serving"
            return ready.is_set()

        eventually(started, STARTUP_TIMEOUT_S, "the in-process server to start")
        yield InProcessServer(built[0], announced[0])
    finally:
        stop.set()
        thread.join(STOP_TIMEOUT_S)
        assert not thread.is_alive(), "the in-process server did not stop"

"""uvicorn's main loop as ``waddle serve`` runs it (waddle/web/server.py, ``_server_class``):
it wakes once a tick, not ten times a second, yet exits as soon as it is asked to and
keeps the Date header current.

The tick is made an hour long for the stop test, so an exit can only come from the wake.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from tests.helpers import eventually
from waddle.web import server as server_module
from waddle.web.server import _server_class


async def hello(scope: dict[str, Any], receive: Any, send: Callable[..., Any]) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


class Running:
    """A ``_server_class`` server in a thread, on an ephemeral loopback port."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(hello, lifespan="off", log_level="warning")
        self.server = _server_class()(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        eventually(lambda: self.server.started, timeout=10, what="the server")

    def date(self) -> str:
        connection = http.client.HTTPConnection(*self.sock.getsockname(), timeout=10)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            assert response.read() == b"hello"
            return response.getheader("date") or ""
        finally:
            connection.close()


@pytest.fixture
def running() -> Iterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        started.append(Running())
        return started[-1]

    yield start
    for run in started:
        run.server.should_exit = True
        run.thread.join(10)
        run.sock.close()


def test_setting_should_exit_wakes_the_loop(
    running: Callable[[], Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "_TICK_S", 3600.0)
    run = running()
    assert run.date()
    threading.Timer(0, setattr, (run.server, "should_exit", True)).start()  # another thread
    run.thread.join(10)
    assert not run.thread.is_alive()


def test_the_date_header_moves_on(running: Callable[[], Running]) -> None:
    run = running()
    first = run.date()
    assert first.endswith(" GMT")
    eventually(lambda: run.date() != first, timeout=10, what="a later Date header")

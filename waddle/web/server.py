"""``waddle serve``: running uvicorn (``waddle.cli`` parses the arguments).

``serve`` binds the socket itself (so port 0 works and the real URL is printed), runs
uvicorn in a thread and keeps the main thread for signals: the first SIGINT or SIGTERM
asks for a graceful stop (connections closed, ingest writers closed, consumers stopped
with their offsets committed), a second one forces it (``waddle.signals``). It returns the
exit code.

An idle server should cost next to nothing, and each thread that wakes periodically
costs CPU even when it finds nothing to do: the main thread blocks in ``join``, in
slices of ``SIGNAL_CHECK_S`` (a signal that lands as a wait begins is seen when it
ends), and uvicorn's main loop (``_Server``) wakes once a second, not ten times, and at
once when asked to exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from waddle.errors import WaddleError
from waddle.signals import SIGNAL_CHECK_S, on_stop_signals
from waddle.web.settings import Settings

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger("waddle.web")

STARTUP_TIMEOUT_S = 120.0
_TICK_S = 1.0  # uvicorn's main loop: the Date header is to the second


def url_of(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); a clear error if that is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise WaddleError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server using "
            "it? Pick another port with --port (0 picks a free one)."
        ) from exc
    return sock


def serve(
    settings: Settings,
    announce: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    started: Callable[[Any], None] | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set); 0 after a clean stop, 1 if the
    app failed to start. ``announce`` gets the line with the URL once it answers.
    ``started`` gets the app once its lifespan has started (its ``state`` holds the
    consumers and the ``IngestLog``), before the URL is announced: what feeds the app's
    log from elsewhere (``waddle serve --from``) shares the app's writers and hints."""
    import uvicorn

    from waddle.web.app import create_app
    from waddle.web.ws import AbortableWebSocketProtocol

    check_free(settings)
    raise_open_files_limit()
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        ws=AbortableWebSocketProtocol,
        ws_max_size=1 << 20,
        timeout_graceful_shutdown=5,
    )
    server = _server_class()(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="waddle-uvicorn", daemon=True
    )
    restore = on_stop_signals(lambda signum: _ask_exit(server), lambda signum: _force_exit(server))
    try:
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.05)
        if server.started:
            if started is not None:
                started(app)
            url = url_of(settings.host, port, settings.token)
            (announce or _print)(f"Waddle is serving {settings.root} at {url}")
        while thread.is_alive():
            thread.join(SIGNAL_CHECK_S if stop is None else 0.1)
            if stop is not None and stop.is_set():
                server.should_exit = True
    finally:
        restore()
        sock.close()
    return 0 if server.started else 1


def raise_open_files_limit() -> None:
    """Let this process open as many files as the system allows it (the soft limit up to
    the hard one): a central host keeps a writer open per live relayed run
    (``IngestLog``), two descriptors each, and a soft limit of 1,024 would make it close
    and resume writers on every request."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:  # a container may forbid it: fewer writers open
        logger.info("waddle: open files limit stays as it is (%s)", exc)


def check_free(settings: Settings) -> None:
    """Refuse early, in one line, when another process already writes this store."""
    from waddle.consumers.duckdb.writer import DuckDBWriter
    from waddle.consumers.registry import StateStore

    name = DuckDBWriter(settings.root, settings.database).name
    if StateStore(settings.root).is_running(name):
        raise WaddleError(
            f"another process already runs the DuckDB writer {name!r} on {settings.root} "
            "(a waddle serve or waddle-consume): stop it first, or serve another --dir or --duckdb"
        )


def _server_class() -> type[uvicorn.Server]:
    """``uvicorn.Server`` whose main loop wakes once a second instead of every 0.1 s.

    It relies on what uvicorn's ``Server`` has done since before 0.29: ``main_loop``
    calls ``on_tick(counter)`` until it returns True, ``on_tick`` refreshes the Date
    header when ``counter % 10 == 0`` and says whether ``should_exit`` is set. Setting
    ``should_exit`` (from any thread, a signal handler included) wakes the loop.
    """
    import uvicorn

    class _Server(uvicorn.Server):
        _exit: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None
        _should_exit = False

        @property
        def should_exit(self) -> bool:
            return self._should_exit

        @should_exit.setter
        def should_exit(self, value: bool) -> None:
            self._should_exit = value
            loop, event = self._loop, self._exit
            if value and loop is not None and event is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(event.set)

        async def main_loop(self) -> None:
            self._exit = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            counter = 0
            while not await self.on_tick(counter):
                # ``on_tick`` refreshes the Date header at multiples of 10: every tick.
                counter = (counter + 10) % 864000
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._exit.wait(), _TICK_S)

    return _Server


def _print(message: str) -> None:
    print(message, flush=True)


def _ask_exit(server: uvicorn.Server) -> None:
    server.should_exit = True


def _force_exit(server: uvicorn.Server) -> None:
    server.should_exit = server.force_exit = True

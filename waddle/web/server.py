"""``waddle serve`` and ``waddle demo``: argument parsing, and running uvicorn.

``serve`` binds the socket itself (so port 0 works and the real URL is printed), runs
uvicorn in a thread and keeps the main thread for signals: the first SIGINT or SIGTERM
asks for a graceful stop (connections closed, ingest writers closed, consumers stopped
with their offsets committed), a second one forces it. It returns the exit code.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from waddle.errors import WaddleError
from waddle.web.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_PORT,
    DEFAULT_WS_HEARTBEAT,
    DEFAULT_WS_QUEUE_EVENTS,
    DEFAULT_WS_SEND_TIMEOUT,
    Settings,
    token_from_env,
)

STARTUP_TIMEOUT_S = 120.0


def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``demo`` to the ``waddle`` command's subparsers."""
    serve = subparsers.add_parser(
        "serve",
        help="serve the dashboard, the API, /ingest and live updates",
        description="Run the DuckDB writer, the live broadcaster and the web app in one "
        "process. Binds 127.0.0.1 unless told otherwise; any other address needs a token.",
    )
    serve.add_argument("--dir", help="the Waddle folder (default: $WADDLE_DIR or ./.waddle)")
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8080; 0: any)")
    serve.add_argument("--token", help="require this token (default: $WADDLE_TOKEN if set)")
    serve.add_argument("--duckdb", help="database file (default: DIR/waddle.duckdb)")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest /ingest body accepted (default 16 MiB)",
    )
    serve.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="URL",
        help="also forward this host's log to the central host at URL (repeatable)",
    )
    serve.add_argument(
        "--relay-token", help="the central host's token (default: $WADDLE_RELAY_TOKEN)"
    )
    serve.add_argument(
        "--demo",
        action="store_true",
        help="first write a demo run into DIR, and keep a second one logging live",
    )
    live = serve.add_argument_group("live updates (tuning)")
    live.add_argument(
        "--poll-interval",
        type=float,
        default=DEFAULT_POLL_INTERVAL,
        help="seconds between looks at an idle log (default %(default)s)",
    )
    live.add_argument(
        "--ws-queue-events",
        type=int,
        default=DEFAULT_WS_QUEUE_EVENTS,
        help="events a WebSocket client may have waiting before its backlog is dropped and "
        "replayed from the log (default %(default)s)",
    )
    live.add_argument(
        "--ws-send-timeout",
        type=float,
        default=DEFAULT_WS_SEND_TIMEOUT,
        help="seconds one send may stall before the client is disconnected (default %(default)s)",
    )
    live.add_argument(
        "--ws-heartbeat",
        type=float,
        default=DEFAULT_WS_HEARTBEAT,
        help="seconds of silence before a heartbeat message (default %(default)s)",
    )
    serve.set_defaults(handler=serve_command, func=serve_command)
    demo = subparsers.add_parser(
        "demo", help="write a short example run", description="Log a short example run."
    )
    demo.add_argument("--dir", help="the Waddle folder (default: $WADDLE_DIR or ./.waddle)")
    demo.add_argument("--steps", type=int, default=300, help="steps to log (default 300)")
    demo.set_defaults(handler=demo_command, func=demo_command)


def settings_from(args: argparse.Namespace) -> Settings:
    from waddle.consumers.relay.consumer import resolve_token
    from waddle.producer.api import root_dir

    root = root_dir(args.dir)
    return Settings(
        root=root,
        host=args.host,
        port=args.port,
        token=token_from_env(args.token),
        max_body_bytes=args.max_body_bytes,
        db_path=Path(args.duckdb) if args.duckdb else None,
        poll_interval=args.poll_interval,
        ws_queue_events=args.ws_queue_events,
        ws_send_timeout=args.ws_send_timeout,
        ws_heartbeat=args.ws_heartbeat,
        relays=tuple(dict.fromkeys(args.relay)),
        relay_token=resolve_token(args.relay_token, ("WADDLE_RELAY_TOKEN",)),
    )


def serve_command(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        if not args.demo:
            return serve(settings)
        _write_demo(settings.root)
        stop = threading.Event()
        live = threading.Thread(target=_live_demo, args=(settings.root, stop), daemon=True)
        live.start()
        try:
            return serve(settings)
        finally:
            stop.set()
            live.join(timeout=5)
    except WaddleError as exc:
        print(f"waddle serve: {exc}", file=sys.stderr)
        return 1


def demo_command(args: argparse.Namespace) -> int:
    from waddle.producer.api import root_dir

    root = root_dir(args.dir)
    run = _write_demo(root, args.steps)
    print(f"Now run: waddle serve --dir {root}   (run {run})")
    return 0


def _write_demo(root: Path, steps: int = 300) -> str:
    from waddle.cli.demo import write_demo

    run = write_demo(root, steps=steps)
    print(f"Wrote demo run {run.id} ({steps} steps) to {root}", flush=True)
    return run.id


def _live_demo(root: Path, stop: threading.Event) -> None:
    """A demo run that logs five steps a second for ten minutes, for live charts."""
    from waddle.cli.demo import write_demo

    write_demo(root, steps=3000, project="demo", pace=0.2, stop=stop)


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
) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set); 0 after a clean stop, 1 if the
    app failed to start. ``announce`` gets the line with the URL once it answers."""
    import uvicorn

    from waddle.web.app import create_app
    from waddle.web.ws import AbortableWebSocketProtocol

    _check_free(settings)
    sock = bind(settings.host, settings.port)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        ws=AbortableWebSocketProtocol,
        ws_max_size=1 << 20,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="waddle-uvicorn", daemon=True
    )
    restore = _on_signals(server)
    try:
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.05)
        if server.started:
            url = url_of(settings.host, port, settings.token)
            (announce or _print)(f"Waddle is serving {settings.root} at {url}")
        while thread.is_alive():
            thread.join(0.1)
            if stop is not None and stop.is_set():
                server.should_exit = True
    finally:
        restore()
        sock.close()
    return 0 if server.started else 1


def _check_free(settings: Settings) -> None:
    """Refuse early, in one line, when another process already writes this store."""
    from waddle.consumers.duckdb.writer import DuckDBWriter
    from waddle.consumers.registry import StateStore

    name = DuckDBWriter(settings.root, settings.database).name
    if StateStore(settings.root).is_running(name):
        raise WaddleError(
            f"another process already runs the DuckDB writer {name!r} on {settings.root} "
            "(a waddle serve or waddle-consume): stop it first, or serve another --dir or --duckdb"
        )


def _print(message: str) -> None:
    print(message, flush=True)


def _on_signals(server: object) -> Callable[[], None]:
    """SIGINT/SIGTERM stop the server gracefully; a second one forces it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, frame: FrameType | None) -> None:
        if getattr(server, "should_exit", False):
            server.force_exit = True  # type: ignore[attr-defined]
        server.should_exit = True  # type: ignore[attr-defined]

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def main(argv: list[str] | None = None) -> int:
    """``python -m waddle.web.server serve|demo ...``: the two commands on their own."""
    parser = argparse.ArgumentParser(prog="waddle")
    add_serve_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

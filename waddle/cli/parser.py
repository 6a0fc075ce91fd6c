"""The ``waddle`` and ``waddle-consume`` commands: all of Waddle's argument parsing.

Each command parses here and delegates to library code that takes plain keyword
arguments: ``waddle.cli.commands`` (ls, show, export, gc, consumers), ``waddle.cli.demo``
(demo, serve --demo), ``waddle.web.server`` (serve), ``waddle.consumers.relay`` (sync,
relay), ``waddle.consumers.daemon`` (waddle-consume) and ``waddle.compat.launch`` (run).
``--dir`` is declared once, in a parent parser every command shares; a flag means the
same thing wherever it appears (``--token`` is the central host's token for ``sync``,
``relay`` and ``waddle-consume``; ``serve``'s own ``--token`` guards the server it runs,
so there the central host's is ``--relay-token``, a spelling the others accept too).

A ``WaddleError`` becomes one line on stderr and exit code 1; a usage error from
argparse exits 2; a reader that closes the pipe early (``waddle show RUN | head``) ends
the command quietly with 141, as a shell reports a SIGPIPE.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from waddle import __version__
from waddle.errors import WaddleError
from waddle.paths import command_root, duckdb_path

DIR_HELP = "the Waddle folder itself (default: $WADDLE_DIR, else ./.waddle)"
DB_HELP = "the DuckDB file (default: DIR/waddle.duckdb)"
TOKEN_HELP = "the central host's token (default: $WADDLE_RELAY_TOKEN, else $WADDLE_TOKEN)"
BROKEN_PIPE_EXIT = 141

if TYPE_CHECKING:
    from waddle.web.settings import Settings

Handler = Callable[[argparse.Namespace], int]


def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The options several commands share, declared once: ``--dir``; ``--duckdb``."""
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument("--dir", help=DIR_HELP)
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--duckdb", help=DB_HELP)
    return folder, database


def _relay_token(parser: argparse.ArgumentParser) -> None:
    """The central host's token: ``--token``, and the old ``--relay-token`` (hidden)."""
    parser.add_argument("--token", dest="relay_token", help=TOKEN_HELP)
    parser.add_argument("--relay-token", dest="relay_token", help=argparse.SUPPRESS)


def _root(args: argparse.Namespace) -> Path:
    return command_root(args.dir)


def _db(args: argparse.Namespace) -> Path:
    return Path(args.duckdb) if args.duckdb else duckdb_path(_root(args))


def _fresh_db(args: argparse.Namespace) -> Path:
    from waddle.cli import commands

    return commands.fresh(_root(args), _db(args))


def _ls(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    return commands.ls(_fresh_db(args), sys.stdout, project=args.project)


def _show(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    return commands.show(_fresh_db(args), args.run, sys.stdout, as_json=args.json)


def _export(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    target = Path(args.output) if args.output else None
    report = sys.stderr if args.output == commands.STDOUT else sys.stdout
    return commands.export(
        _root(args), _fresh_db(args), args.run, args.format, target, report, wide=args.wide
    )


def _gc(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    return commands.gc(_root(args), sys.stdout, dry_run=args.dry_run)


def _consumers(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    if args.action == "rm":
        return commands.consumers_rm(_root(args), args.name, sys.stdout)
    return commands.consumers(_root(args), sys.stdout)


def _settings(args: argparse.Namespace) -> Settings:
    from waddle.consumers.relay.consumer import resolve_token
    from waddle.web.settings import Settings, token_from_env

    return Settings(
        root=_root(args),
        host=args.host,
        port=args.port,
        token=token_from_env(args.token),
        max_body_bytes=args.max_body_bytes,
        max_blob_bytes=args.max_blob_bytes,
        db_path=Path(args.duckdb) if args.duckdb else None,
        poll_interval=args.poll_interval,
        ws_queue_events=args.ws_queue_events,
        ws_send_timeout=args.ws_send_timeout,
        ws_heartbeat=args.ws_heartbeat,
        relays=tuple(dict.fromkeys(args.relay)),
        relay_token=resolve_token(args.relay_token, ("WADDLE_RELAY_TOKEN",)),
        lake=Path(args.lake) if args.lake else None,
    )


def _serve(args: argparse.Namespace) -> int:
    from waddle.consumers.base import freeze_when_caught_up

    settings = _settings(args)
    freeze_when_caught_up()
    if args.demo:
        from waddle.cli.demo import serve_demo

        return serve_demo(settings)
    if args.from_url:
        from waddle.web.nats_ingest import serve_from

        return serve_from(settings, args.from_url, name=args.ingester_name)
    from waddle.web.server import serve

    return serve(settings)


def _demo(args: argparse.Namespace) -> int:
    from waddle.cli.demo import write_announced

    root = _root(args)
    run = write_announced(root, args.steps)
    print(f"Now run: waddle serve --dir {root}   (run {run})")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from waddle.consumers.nats.broker import is_nats_url

    if is_nats_url(args.url):
        from waddle.consumers.nats import publisher

        return publisher.sync(_root(args), args.url, timeout=args.timeout, out=sys.stderr)
    from waddle.consumers.relay.consumer import resolve_token
    from waddle.consumers.relay.sync import sync

    return sync(_root(args), args.url, token=resolve_token(args.relay_token), timeout=args.timeout)


def _nats(args: argparse.Namespace) -> int:
    from waddle.consumers.nats.broker import DAY_S, Layout, setup

    layout = Layout(
        max_age_s=args.max_age_days * DAY_S,
        max_bytes=args.max_bytes,
        duplicate_window_s=args.duplicate_window,
        replicas=args.replicas,
        ack_wait_s=args.ack_wait,
        partitions=args.partitions,
        lease_s=args.lease,
    )
    for line in setup(args.url, layout):
        print(line)
    return 0


def _relay(args: argparse.Namespace) -> int:
    from waddle.consumers.relay.consumer import relay_until_stopped, resolve_token

    _logging()
    token = resolve_token(args.relay_token)
    return relay_until_stopped(_root(args), args.url, token=token, interval=args.interval)


def _run(args: argparse.Namespace) -> int:
    from waddle.compat.launch import launch

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return launch(command)


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    func: Handler,
    parents: list[argparse.ArgumentParser],
    description: str | None = None,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description or help, parents=parents)
    parser.set_defaults(func=func)
    return parser


def _add_serve(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    folder: argparse.ArgumentParser,
    db: argparse.ArgumentParser,
) -> None:
    from waddle.web import settings as web

    serve = _add(
        sub,
        "serve",
        "serve the dashboard, the API, /ingest and live updates",
        _serve,
        [folder, db],
        "Run the DuckDB writer, the live broadcaster and the web app in one process. "
        "Binds 127.0.0.1 unless told otherwise; any other address needs a token.",
    )
    serve.add_argument(
        "--host", default=web.DEFAULT_HOST, help="address to bind (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=web.DEFAULT_PORT, help="port (default 8080; 0: any)"
    )
    serve.add_argument("--token", help="require this token (default: $WADDLE_TOKEN if set)")
    serve.add_argument(
        "--max-body-bytes",
        type=int,
        default=web.DEFAULT_MAX_BODY_BYTES,
        help="largest /ingest body accepted (default 16 MiB)",
    )
    serve.add_argument(
        "--max-blob-bytes",
        type=int,
        default=web.DEFAULT_MAX_BLOB_BYTES,
        help="largest file a PUT /blobs/{sha256} accepts (default 512 MiB)",
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
        "--lake",
        metavar="DIR",
        help="also show the finished runs of this Parquet lake (docs/lake.md)",
    )
    serve.add_argument(
        "--from",
        dest="from_url",
        metavar="URL",
        help="also ingest events from NATS JetStream at nats://HOST:PORT (docs/nats.md)",
    )
    serve.add_argument(
        "--name",
        dest="ingester_name",
        help="this ingester's name in the broker, stable across restarts (default: HOST:DIR)",
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
        default=web.DEFAULT_POLL_INTERVAL,
        help="seconds between looks at an idle log (default %(default)s)",
    )
    live.add_argument(
        "--ws-queue-events",
        type=int,
        default=web.DEFAULT_WS_QUEUE_EVENTS,
        help="events a WebSocket client may have waiting before its backlog is dropped and "
        "replayed from the log (default %(default)s)",
    )
    live.add_argument(
        "--ws-send-timeout",
        type=float,
        default=web.DEFAULT_WS_SEND_TIMEOUT,
        help="seconds one send may stall before the client is disconnected (default %(default)s)",
    )
    live.add_argument(
        "--ws-heartbeat",
        type=float,
        default=web.DEFAULT_WS_HEARTBEAT,
        help="seconds of silence before a heartbeat message (default %(default)s)",
    )


def _add_nats(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from waddle.consumers.nats import broker

    nats = _add(
        sub,
        "nats",
        "set up NATS JetStream for relays and ingesters past one host",
        _nats,
        [],
        "setup: create (or update) the stream, the durable consumer of each partition and "
        "the lease buckets on the server at --url; idempotent (docs/nats.md).",
    )
    nats.add_argument("action", choices=("setup",))
    nats.add_argument("--url", required=True, help="the NATS server, nats://HOST:PORT")
    nats.add_argument(
        "--max-age-days",
        type=float,
        default=broker.DEFAULT_MAX_AGE_S / broker.DAY_S,
        help="keep events this long in the broker (default %(default)s)",
    )
    nats.add_argument(
        "--max-bytes", type=int, default=-1, help="keep at most this much (default: no limit)"
    )
    nats.add_argument(
        "--duplicate-window",
        type=float,
        default=broker.DEFAULT_DUPLICATE_WINDOW_S,
        help="seconds in which a repeated publish is dropped (default %(default)s)",
    )
    nats.add_argument("--replicas", type=int, default=1, help="copies in a cluster (default 1)")
    nats.add_argument(
        "--ack-wait",
        type=float,
        default=broker.DEFAULT_ACK_WAIT_S,
        help="seconds before a message a dead ingester took goes to another (default %(default)s)",
    )
    nats.add_argument(
        "--partitions",
        type=int,
        help=f"partitions of a new stream (default {broker.DEFAULT_PARTITIONS}); "
        "fixed once the stream exists",
    )
    nats.add_argument(
        "--lease",
        type=float,
        default=broker.DEFAULT_LEASE_S,
        help="seconds a dead ingester's partitions wait before another takes them "
        "(default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``waddle`` command and its subcommands."""
    from waddle.consumers.relay.sync import DEFAULT_SYNC_TIMEOUT_S
    from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL

    folder, db = _parents()
    parser = argparse.ArgumentParser(
        prog="waddle", description="Offline-first experiment tracking: your runs on your disk."
    )
    parser.add_argument("--version", action="version", version=f"waddle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ls = _add(
        sub,
        "ls",
        "list runs: id, project, name, status, start, duration, last step",
        _ls,
        [folder, db],
    )
    ls.add_argument("--project", help="only this project")

    show = _add(sub, "show", "print a run's config, summary and context", _show, [folder, db])
    show.add_argument("run", help="the run: an id, an id prefix or a name")
    show.add_argument("--json", action="store_true", help="the whole record as JSON")

    export = _add(
        sub, "export", "write a run's metrics to a CSV or Parquet file", _export, [folder, db]
    )
    export.add_argument("run", help="the run: an id, an id prefix or a name")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument(
        "--output", "-o", help="the file to write, - for stdout (default: RUN.FORMAT)"
    )
    export.add_argument(
        "--wide",
        action="store_true",
        help="one row per step, one column per metric (default: key, step, ts, value rows)",
    )

    gc = _add(
        sub, "gc", "delete sealed segments every registered consumer has taken", _gc, [folder]
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would be freed")

    consumers = _add(
        sub,
        "consumers",
        "list registered consumers and their lag, or remove one",
        _consumers,
        [folder],
    )
    consumers.add_argument("action", nargs="?", choices=("ls", "rm"), default="ls")
    consumers.add_argument("name", nargs="?", help="the consumer to remove (with rm)")

    _add_serve(sub, folder, db)
    demo = _add(sub, "demo", "write a short example run", _demo, [folder])
    demo.add_argument("--steps", type=int, default=300, help="steps to log (default 300)")

    sync = _add(
        sub,
        "sync",
        "send a central host everything not relayed yet, then exit",
        _sync,
        [folder],
        "Relay every event on disk that URL does not hold yet, with a progress bar, then "
        "exit 0. Works on runs that are still running; a later sync or a running relay "
        "sends the rest, never anything twice.",
    )
    sync.add_argument("url", help="the central host, http://HOST:PORT, or nats://HOST:PORT")
    _relay_token(sync)
    sync.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_SYNC_TIMEOUT_S,
        help="give up when the host cannot be reached for this many seconds (default %(default)s)",
    )

    _add_nats(sub)
    relay = _add(
        sub,
        "relay",
        "forward the log to a central host until stopped (the relay alone)",
        _relay,
        [folder],
    )
    relay.add_argument("url", help="the central host, http://HOST:PORT")
    _relay_token(relay)
    relay.add_argument(
        "--interval", type=float, default=DEFAULT_POLL_INTERVAL, help="seconds between polls"
    )

    run = _add(
        sub,
        "run",
        "run a command in which `import wandb` is Waddle; exit with its code",
        _run,
        [],
        "Run CMD with Waddle's wandb package first on PYTHONPATH, so a script or framework "
        "that imports wandb logs to Waddle unchanged. SIGINT and SIGTERM are passed on.",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    return parser


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def _quiet_broken_pipe() -> int:
    """The reader went away: send the rest of stdout nowhere, so the flush at exit is
    quiet too, and exit as a shell reports a SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return BROKEN_PIPE_EXIT


def _call(prog: str, func: Handler, args: argparse.Namespace) -> int:
    """Run a command: a ``WaddleError`` is one line on stderr, a closed pipe is quiet."""
    try:
        code = func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except WaddleError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``waddle``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "consumers" and args.action == "rm" and not args.name:
        parser.error("consumers rm needs the NAME of the consumer to remove")
    if args.command == "run" and not [a for a in args.cmd if a != "--"]:
        parser.error("run needs a command: waddle run -- python train.py ...")
    return _call(f"waddle {args.command}", args.func, args)


def build_consume_parser() -> argparse.ArgumentParser:
    """The ``waddle-consume`` command."""
    folder, db = _parents()
    parser = argparse.ArgumentParser(
        prog="waddle-consume",
        description="Run log consumers (the DuckDB writer, relays, plug-ins) as a daemon.",
        parents=[folder, db],
    )
    parser.add_argument("--version", action="version", version=f"waddle {__version__}")
    parser.add_argument(
        "--consumer",
        action="append",
        default=[],
        metavar="NAME",
        help="a consumer to run: duckdb, a plug-in's entry-point name, or module:Class "
        "(repeatable; default: duckdb)",
    )
    parser.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="URL",
        help="also forward the log to the central host at URL (repeatable)",
    )
    _relay_token(parser)
    parser.add_argument(
        "--lake",
        metavar="DIR",
        help="the Parquet lake the lake consumer writes finished runs to (with --consumer "
        "lake; default: DIR/lake)",
    )
    parser.add_argument(
        "--once", action="store_true", help="catch up with everything on disk, then exit 0"
    )
    parser.add_argument(
        "--interval", type=float, default=None, help="seconds between polls of the log"
    )
    return parser


def _consume(args: argparse.Namespace) -> int:
    from waddle.consumers.base import freeze_when_caught_up
    from waddle.consumers.daemon import consume
    from waddle.consumers.progress import CatchUpProgress
    from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL

    freeze_when_caught_up()
    root = _root(args)
    return consume(
        root,
        args.consumer,
        duckdb_path=Path(args.duckdb) if args.duckdb else None,
        lake_path=Path(args.lake) if args.lake else None,
        once=args.once,
        interval=args.interval or DEFAULT_POLL_INTERVAL,
        progress=CatchUpProgress(root),
        relays=args.relay,
        relay_token=args.relay_token,
    )


def consume_main(argv: list[str] | None = None) -> int:
    """Entry point of ``waddle-consume``."""
    parser = build_consume_parser()
    args = parser.parse_args(argv)
    if args.lake and "lake" not in args.consumer:
        parser.error("--lake names the lake consumer's folder: add --consumer lake")
    _logging()
    _exit_without_collecting()
    return _call("waddle-consume", _consume, args)


def _exit_without_collecting() -> None:
    """At exit, freeze what is alive so the interpreter's last collections skip it.

    Those collections walked every object numpy, DuckDB and Waddle had made, a tenth of
    a second of a short ``--once`` run spent after its work was done. Nothing needs them:
    every consumer has closed (and released what it held) by then; exit handlers still run.
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)

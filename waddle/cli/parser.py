"""The ``waddle`` and ``waddle-consume`` commands. They parse arguments and delegate.

The work is in ``waddle.cli.commands`` (ls, show, export, gc, consumers), in
``waddle.consumers.daemon`` (waddle-consume) and in ``waddle.web.server`` (serve, demo).
A ``WaddleError`` becomes one line on stderr and exit code 1; a usage error from
argparse exits 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from waddle.errors import WaddleError

DIR_HELP = "the Waddle folder (default: $WADDLE_DIR, else ./.waddle)"
DB_HELP = "the DuckDB file (default: DIR/waddle.duckdb)"


def _root(args: argparse.Namespace) -> Path:
    from waddle.producer.api import root_dir

    return root_dir(args.dir)


def _db(args: argparse.Namespace) -> Path:
    from waddle.store.schema import default_path

    return Path(args.duckdb) if args.duckdb else default_path(_root(args))


def _ls(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    return commands.ls(_db(args), sys.stdout, project=args.project)


def _show(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    return commands.show(_db(args), args.run, sys.stdout, as_json=args.json)


def _export(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    target = Path(args.output) if args.output else None
    return commands.export(_root(args), _db(args), args.run, args.format, target, sys.stdout)


def _gc(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    return commands.gc(_root(args), sys.stdout, dry_run=args.dry_run)


def _consumers(args: argparse.Namespace) -> int:
    from waddle.cli import commands

    if args.action == "rm":
        return commands.consumers_rm(_root(args), args.name, sys.stdout)
    return commands.consumers(_root(args), sys.stdout)


def _add(subparsers: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=help, description=help)
    parser.add_argument("--dir", help=DIR_HELP)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waddle", description="Offline-first experiment tracking: your runs on your disk."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    ls = _add(sub, "ls", "list runs: id, project, name, status, start, duration, last step")
    ls.add_argument("--duckdb", help=DB_HELP)
    ls.add_argument("--project", help="only this project")
    ls.set_defaults(func=_ls)

    show = _add(sub, "show", "print a run's config, summary and context")
    show.add_argument("run", help="the run id")
    show.add_argument("--duckdb", help=DB_HELP)
    show.add_argument("--json", action="store_true", help="the whole record as JSON")
    show.set_defaults(func=_show)

    export = _add(sub, "export", "write a run's metrics (key, step, ts, value) to a file")
    export.add_argument("run", help="the run id")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument("--output", "-o", help="the file to write (default: RUN.FORMAT)")
    export.add_argument("--duckdb", help=DB_HELP)
    export.set_defaults(func=_export)

    gc = _add(sub, "gc", "delete sealed segments every registered consumer has taken")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be freed")
    gc.set_defaults(func=_gc)

    consumers = _add(sub, "consumers", "list registered consumers and their lag, or remove one")
    consumers.add_argument("action", nargs="?", choices=("ls", "rm"), default="ls")
    consumers.add_argument("name", nargs="?", help="the consumer to remove (with rm)")
    consumers.set_defaults(func=_consumers)

    from waddle.consumers.relay.sync import add_sync_parser
    from waddle.web.server import add_serve_parser

    add_serve_parser(sub)
    add_sync_parser(sub)
    return parser


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``waddle``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "consumers" and args.action == "rm" and not args.name:
        parser.error("consumers rm needs the NAME of the consumer to remove")
    try:
        return args.func(args)
    except WaddleError as exc:
        print(f"waddle {args.command}: {exc}", file=sys.stderr)
        return 1


def build_consume_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waddle-consume",
        description="Run log consumers (the DuckDB writer, relays, plug-ins) as a daemon.",
    )
    parser.add_argument("--dir", help=DIR_HELP)
    parser.add_argument("--duckdb", help=DB_HELP + " for the duckdb consumer")
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
    parser.add_argument(
        "--token",
        help="the central host's token for --relay "
        "(default: $WADDLE_RELAY_TOKEN, else $WADDLE_TOKEN)",
    )
    parser.add_argument(
        "--once", action="store_true", help="catch up with everything on disk, then exit 0"
    )
    parser.add_argument(
        "--interval", type=float, default=None, help="seconds between polls of the log"
    )
    return parser


def consume_main(argv: list[str] | None = None) -> int:
    """Entry point of ``waddle-consume``."""
    args = build_consume_parser().parse_args(argv)
    _logging()
    from waddle.consumers.daemon import consume
    from waddle.consumers.progress import CatchUpProgress
    from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL

    root = _root(args)
    return consume(
        root,
        args.consumer,
        duckdb_path=Path(args.duckdb) if args.duckdb else None,
        once=args.once,
        interval=args.interval or DEFAULT_POLL_INTERVAL,
        progress=CatchUpProgress(root),
        relays=args.relay,
        relay_token=args.token,
    )


if __name__ == "__main__":
    sys.exit(main())

"""The ``waddle`` and ``waddle-consume`` commands. They parse arguments and delegate."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waddle", description="Offline-first experiment tracking: your runs on your disk."
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``waddle``."""
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
    return 0


def consume_main(argv: list[str] | None = None) -> int:
    """Entry point of ``waddle-consume``."""
    parser = argparse.ArgumentParser(
        prog="waddle-consume", description="Run log consumers (DuckDB writer, relay) as a daemon."
    )
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())

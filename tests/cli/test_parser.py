"""One parser: --dir declared once and shared, the same flag names everywhere."""

from __future__ import annotations

import argparse

import pytest

from waddle.cli import parser as cli


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (action,) = [
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    return dict(action.choices)


def test_every_command_that_reads_a_folder_takes_the_same_dir() -> None:
    commands = subcommands()
    assert set(commands) >= {
        "ls",
        "show",
        "export",
        "gc",
        "consumers",
        "serve",
        "demo",
        "sync",
        "relay",
        "run",
    }
    for name, sub in commands.items():
        if name in ("run", "nats"):  # they read no Waddle folder
            continue
        assert cli.DIR_HELP in " ".join(sub.format_help().split()), name
    assert cli.build_consume_parser().parse_args(["--dir", "x"]).dir == "x"


@pytest.mark.parametrize("flag", ["--token", "--relay-token"])
def test_the_central_hosts_token_has_one_name_and_the_old_spelling(flag: str) -> None:
    consume = cli.build_consume_parser()
    assert consume.parse_args(["--relay", "http://h:1", flag, "t"]).relay_token == "t"
    sync = cli.build_parser().parse_args(["sync", "http://h:1", flag, "t"])
    assert sync.relay_token == "t"
    assert "--relay-token" not in consume.format_help()
    assert "--relay-token" not in subcommands()["sync"].format_help()


def test_serve_keeps_its_own_token_apart_from_the_relays() -> None:
    args = cli.build_parser().parse_args(["serve", "--token", "local", "--relay-token", "far"])
    assert (args.token, args.relay_token) == ("local", "far")


def test_run_takes_the_command_after_the_double_dash() -> None:
    args = cli.build_parser().parse_args(["run", "--", "python", "-c", "pass", "--dir", "x"])
    assert [a for a in args.cmd if a != "--"] == ["python", "-c", "pass", "--dir", "x"]

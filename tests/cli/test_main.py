"""The ``waddle`` and ``waddle-consume`` commands: parsing and delegation, and the read
commands next to a running writer (real ``waddle serve`` and ``waddle-consume``)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.consumers.logs import CONSUME, WADDLE, write_run
from tests.helpers import eventually
from waddle.cli import parser as cli
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.registry import StateStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    write_run(root, "alpha", 120, segment_bytes=2048, config={"lr": 0.5}, tags=["x"])
    write_run(root, "beta", 5, finish="failed", project="other")
    return root


@pytest.fixture
def built(root: Path) -> Path:
    run_consumer(DuckDBWriter(root), root, threading.Event(), once=True)
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 0 and "ls" in out and "serve" in out and "consumers" in out


def test_ls(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "ls", "--dir", str(built))
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["RUN", "PROJECT", "NAME", "STATUS", "STARTED", "DURATION", "STEP"]
    assert {row.split()[0]: (row.split()[3], row.split()[-1]) for row in rows} == {
        "alpha": ("finished", "119"),
        "beta": ("failed", "4"),
    }
    code, out, _ = run_cli(capsys, "ls", "--dir", str(built), "--project", "other")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["beta"]


def test_show(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "show", "alpha", "--dir", str(built))
    assert code == 0
    assert re.search(r"^status: +finished \(exit code 0\)$", out, re.M)
    assert '"lr": 0.5' in out and "summary:" in out and "context:" in out
    code, out, _ = run_cli(capsys, "show", "alpha", "--dir", str(built), "--json")
    record = json.loads(out)
    assert record["config"] == {"lr": 0.5} and record["tags"] == ["x"]
    code, _, err = run_cli(capsys, "show", "nope", "--dir", str(built))
    assert code == 1 and "no run 'nope'" in err


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(built: Path, tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / f"alpha.{fmt}"
    code, out, _ = run_cli(
        capsys, "export", "alpha", "--dir", str(built), "--format", fmt, "-o", str(target)
    )
    assert code == 0 and "wrote 360 metric values" in out and target.exists()


def test_gc_and_consumers(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "consumers", "--dir", str(built))
    assert code == 0 and out.startswith("duckdb  (not running")
    assert re.search(r"^  alpha +0 +0$", out, re.M)
    code, out, _ = run_cli(capsys, "gc", "--dir", str(built), "--dry-run")
    assert code == 0 and "would free" in out
    code, out, _ = run_cli(capsys, "gc", "--dir", str(built))
    assert code == 0 and re.search(r"^freed \d+ segments", out, re.M)
    assert len(list((built / "log" / "alpha").glob("*.ndjson"))) == 1
    code, out, _ = run_cli(capsys, "consumers", "rm", "duckdb", "--dir", str(built))
    assert code == 0 and StateStore(built).registered() == []
    code, _, err = run_cli(capsys, "consumers", "rm", "duckdb", "--dir", str(built))
    assert code == 1 and "no registered consumer" in err
    code, out, _ = run_cli(capsys, "gc", "--dir", str(built))
    assert "nothing deleted" in out


def test_ls_builds_a_missing_database_from_the_log(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "ls", "--dir", str(root))
    assert code == 0 and {"alpha", "beta"} <= {line.split()[0] for line in out.splitlines()}
    assert (root / "waddle.duckdb").exists()


def test_consume_main_in_process(root: Path) -> None:
    assert cli.consume_main(["--dir", str(root), "--once"]) == 0
    assert (root / "waddle.duckdb").exists()


def test_a_store_elsewhere_registers_under_a_name_of_its_own(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.duckdb"
    assert cli.consume_main(["--dir", str(root), "--once"]) == 0
    assert cli.consume_main(["--dir", str(root), "--once", "--duckdb", str(other)]) == 0
    assert cli.consume_main(["--dir", str(root), "--once", "--duckdb", str(other)]) == 0
    names = sorted(r.name for r in StateStore(root).registered())
    assert len(names) == 2 and names[0] == "duckdb" and names[1].startswith("duckdb-")
    code, out, _ = run_cli(capsys, "consumers", "--dir", str(root))
    assert code == 0 and re.search(rf"^{names[1]}  \(not running", out, re.M)


def waddle(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WADDLE, *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("writer", ["serve", "waddle-consume"])
def test_read_commands_next_to_a_running_writer(root: Path, tmp_path: Path, writer: str) -> None:
    if writer == "serve":
        command = [*WADDLE, "serve", "--dir", str(root), "--port", "0"]
    else:
        command = [*CONSUME, "--dir", str(root)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        eventually(lambda: (root / "waddle.runs.parquet").exists(), 60, "the runs snapshot")

        def both_listed() -> subprocess.CompletedProcess[str] | None:
            listed = waddle("ls", "--dir", str(root))
            assert listed.returncode == 0, listed.stderr
            return listed if "beta" in listed.stdout and "alpha" in listed.stdout else None

        listed = eventually(both_listed, 30, "alpha and beta in waddle ls")
        assert "held by a running writer" in listed.stdout
        shown = waddle("show", "alpha", "--dir", str(root))
        assert shown.returncode == 0 and '"lr": 0.5' in shown.stdout, shown.stderr
        target = tmp_path / "alpha.csv"
        exported = waddle("export", "alpha", "--dir", str(root), "-o", str(target))
        assert exported.returncode == 0, exported.stderr
        assert "from the log" in exported.stdout
        assert len(target.read_text().splitlines()) == 1 + 360
        wide = waddle("export", "alp", "--dir", str(root), "--wide", "-o", "-")
        assert wide.returncode == 0 and "from the log" in wide.stderr, wide.stderr
        assert len(wide.stdout.splitlines()) == 1 + 120
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err

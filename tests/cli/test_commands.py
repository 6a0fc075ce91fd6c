"""The read commands right after a training script: fresh store, run by prefix or name,
export to stdout and the wide table (in process, through ``waddle.cli.parser.main``)."""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path

import duckdb
import pytest

from tests.consumers.logs import write_run
from waddle.cli import parser as cli
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.refresh import refresh
from waddle.consumers.duckdb.writer import DuckDBWriter


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "w"
    write_run(root, "abc123", 3, name="first")
    write_run(root, "abd456", 2, name="second")
    write_run(root, "xyz789", 2, name="second")
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_show_and_ls_see_runs_written_after_the_store_was_built(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_consumer(DuckDBWriter(root), root, threading.Event(), once=True)
    write_run(root, "later", 4, name="late")
    code, out, _ = run_cli(capsys, "ls", "--dir", str(root))
    assert code == 0 and "later" in out
    code, out, _ = run_cli(capsys, "show", "later", "--dir", str(root))
    assert code == 0 and "name:      late" in out


def test_refresh_leaves_a_store_held_by_a_running_writer_alone(root: Path) -> None:
    db = root / "waddle.duckdb"
    stop = threading.Event()
    ready = threading.Event()
    writer = threading.Thread(
        target=run_consumer,
        args=(DuckDBWriter(root, db), root, stop),
        kwargs={"ready": ready, "interval": 0.05},
    )
    writer.start()
    try:
        assert ready.wait(30)
        assert refresh(root, db) is False
    finally:
        stop.set()
        writer.join(30)
    assert refresh(root, db) is True


@pytest.mark.parametrize("ref", ["abc123", "abc", "first"])
def test_show_takes_an_id_a_prefix_or_a_name(
    root: Path, ref: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "show", ref, "--dir", str(root))
    assert code == 0, err
    assert out.startswith("run:       abc123\n")


@pytest.mark.parametrize(
    ("ref", "candidates"), [("ab", ["abc123", "abd456"]), ("second", ["abd456", "xyz789"])]
)
def test_an_ambiguous_prefix_or_name_lists_the_candidates(
    root: Path, ref: str, candidates: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "show", ref, "--dir", str(root))
    assert code == 1 and out == ""
    assert f"{ref!r} names 2 runs" in err and all(c in err for c in candidates)


def test_export_to_stdout_writes_the_file_there_and_the_report_to_stderr(
    root: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    code = cli.main(["export", "first", "--dir", str(root), "-o", "-"])
    out, err = capfdbinary.readouterr()
    assert code == 0
    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows[0] == ["key", "step", "ts", "value"] and len(rows) == 1 + 9
    assert b"wrote 9 metric values of run abc123 to stdout" in err


def test_export_wide_has_one_row_per_step_and_one_column_per_metric(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "wide", 4, payload=lambda step: {"loss": 1.0 / (step + 1), "acc": step / 10})
    target = tmp_path / "wide.csv"
    assert cli.main(["export", "wide", "--dir", str(root), "--wide", "-o", str(target)]) == 0
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [row["step"] for row in rows] == ["0", "1", "2", "3"]
    assert set(rows[0]) == {"step", "loss", "acc"}
    assert float(rows[3]["loss"]) == 0.25 and float(rows[3]["acc"]) == pytest.approx(0.3)
    parquet = tmp_path / "wide.parquet"
    argv = ["export", "wide", "--dir", str(root), "--wide", "--format", "parquet"]
    assert cli.main([*argv, "-o", str(parquet)]) == 0
    literal = str(parquet).replace("'", "''")
    with duckdb.connect() as con:
        got = con.execute(f"SELECT step, loss FROM '{literal}' ORDER BY step").fetchall()
    assert got == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]


def test_a_folder_without_runs_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "ls", "--dir", str(tmp_path / "nothing"))
    assert code == 1 and f"no runs in {tmp_path / 'nothing'} yet" in err
    assert not (tmp_path / "nothing").exists()

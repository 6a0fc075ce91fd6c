"""A real full disk for fault tests: a small tmpfs that holds a Waddle folder.

Mounting needs root (CI runs as root); elsewhere the tests that use it are skipped with
the reason. The log itself stays on the big disk (``<root>/log`` links to a folder
there), so producers go on logging while everything a consumer writes (the DuckDB file
and its WAL, ``state/``, the runs snapshot) sits on the small one: ``fill`` makes those
writes fail with ENOSPC, as a full disk does, and ``free`` gives the space back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.consumers.logs import read_tables
from waddle.consumers.base import run_consumer
from waddle.consumers.duckdb.writer import DuckDBWriter

SIZE = "2m"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class SmallDisk:
    """A mounted tmpfs (``root``, the Waddle folder) and the filler that fills it."""

    root: Path

    @property
    def filler(self) -> Path:
        return self.root / "filler"

    def fill(self) -> None:
        """Write the filler until the disk refuses another byte."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            chunk = b"\0" * _CHUNK
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink()


@contextlib.contextmanager
def small_disk(where: Path, log: Path) -> Iterator[SmallDisk]:
    """Mount a tmpfs of ``SIZE`` at ``where`` with ``where/log`` linked to ``log``; unmount."""
    where.mkdir(parents=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command here: a real full disk needs a tmpfs mount (as root)")
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs ({mounted.stderr.strip()}): a real full disk needs root; "
            "CI runs these tests as root"
        )
    try:
        log.mkdir(parents=True, exist_ok=True)
        (where / "log").symlink_to(log, target_is_directory=True)
        yield SmallDisk(where)
    finally:
        if subprocess.run(["umount", str(where)], timeout=30, check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], timeout=30, check=False)


def same_as_one_clean_pass(root: Path, reference: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The tables of ``root``'s store, checked equal to one uninterrupted pass of the log."""
    tables = read_tables(root / "waddle.duckdb")
    writer = DuckDBWriter(root, reference, durable=False, snapshot_interval=0)
    run_consumer(writer, root, threading.Event(), once=True)
    assert tables == read_tables(reference), "the tables differ from one clean pass of the log"
    return tables

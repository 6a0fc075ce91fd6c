"""The lake consumer: every finished run, once, as Parquet in a hive-partitioned lake.

It folds the log with the DuckDB writer itself (a scratch database of its own,
``<root>/<name>.duckdb``), so the lake's tables have the store's columns and rules, and
when a run's ``finish`` event is consumed it writes that run's rows of every table into
the lake (``waddle.consumers.lake.export``; layout in ``waddle.store.lake``). Its files
there are named by a writer id drawn once and kept outside the scratch database
(``writer_path``), so a scratch database deleted or lost is rebuilt from the log and
finds its exports current, instead of exporting every run again beside them.

Delivery: exactly-once per finished run. The scratch database commits rows and offsets
in one transaction (the writer's guarantee); which runs still need an export follows
from it: a run whose status is not ``running`` and whose fingerprint (status, and each
stream's finish time) differs from the one recorded after its last export. So a kill at
any moment is followed, at the next start, by the exports it interrupted; an export
whose files are found current (the lake's ``runs`` row equals the store's) is recorded,
not redone. A run that is resumed and finishes again, or one whose further ranks finish
later, is exported again and its files replaced; events logged after the last finish
wait for the next one. Offsets are published (``state/<name>.json``) after the files
are in place.

What it does not do: a live run is not in the lake until it finishes (``waddle serve``
shows it from its own store); media blobs stay in ``<root>/blobs``, only their rows go.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path

import duckdb

from waddle.consumers.base import Consumer, Offsets
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.lake import export
from waddle.consumers.registry import destination_name
from waddle.errors import PermanentError, StoreError
from waddle.eventlog.reader import Batch, Offset
from waddle.ids import is_valid_id
from waddle.paths import state_dir

logger = logging.getLogger("waddle.consumers")

# Runs exported by one COPY per table: larger batches cost fewer statements and syncs,
# smaller ones show runs sooner while a backlog is exported.
BATCH_RUNS = 256
WRITER_ID = re.compile("[0-9a-f]{16}")

LEDGER = """
CREATE SCHEMA IF NOT EXISTS _lake;
CREATE TABLE IF NOT EXISTS _lake.exported (run_id VARCHAR PRIMARY KEY, fingerprint VARCHAR);
"""
# Finished runs with what their export depends on; pending ones differ from the ledger.
PENDING = """
SELECT r.run_id, r.project, md5(r.status || '|' || coalesce(string_agg(
    s.stream || '@' || coalesce(s.finished_at::VARCHAR, '-'), ',' ORDER BY s.stream), ''))
    AS fingerprint
FROM runs r LEFT JOIN streams s ON s.run_id = r.run_id
WHERE r.status <> 'running'
GROUP BY r.run_id, r.project, r.status
"""


def default_lake(root: Path | str) -> Path:
    """The lake when none is named: ``<root>/lake``."""
    return Path(root) / "lake"


def writer_path(root: Path | str, name: str) -> Path:
    """Where consumer ``name`` of ``root`` keeps its writer id: beside its registration,
    not in the scratch database, whose loss must not change the names of its files."""
    return state_dir(root) / "lake" / f"{name}.writer"


class LakeConsumer(Consumer):
    """The durable consumer that exports finished runs to the lake at ``lake``."""

    durable = True

    def __init__(self, root: Path | str, lake: Path | str | None = None) -> None:
        self.root = Path(root)
        self.lake = Path(lake if lake is not None else default_lake(self.root)).absolute()
        self.name = destination_name("lake", self.lake, default_lake(self.root))
        self.writer = DuckDBWriter(
            self.root,
            self.root / f"{self.name}.duckdb",
            name=self.name,
            durable=False,
            snapshot_interval=0,
        )
        self.writer_id = ""
        self._exporter: export.Exporter | None = None
        self._finished = False
        self.exported = 0

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Open the scratch database, then do the exports a previous run left undone."""
        committed = self.writer.start(offsets)
        try:
            self.writer_id = self._writer_id()
            with self.writer.cursor() as con:
                con.execute(LEDGER)
                self._exporter = export.Exporter(con, self.lake, self.writer_id)
            export.clear_staging(self.lake, self.writer_id)
            self._finished = True
            self._export_pending()
        except BaseException:
            self.writer.close()
            raise
        return super().start(committed)

    def _writer_id(self) -> str:
        """The id that names this consumer's files in the lake: drawn at the first start,
        then read from ``writer_path`` (written atomically; the registry's lock keeps a
        second process of this name out meanwhile)."""
        path = writer_path(self.root, self.name)
        try:
            if not path.exists():
                _write_whole(path, uuid.uuid4().hex[:16])
            writer = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"could not keep the lake writer id in {path}: {exc}") from exc
        if not WRITER_ID.fullmatch(writer):
            raise PermanentError(
                f"{path} holds no writer id (16 hex digits), so the files this consumer wrote "
                f"to {self.lake} cannot be told apart: restore the file, or delete it together "
                "with this consumer's part-<id>.parquet files in the lake"
            )
        return writer

    def handle(self, batches: list[Batch]) -> None:
        """Fold the batches into the scratch database; note whether a run may have ended."""
        self.writer.handle(batches)
        if not self._finished:
            self._finished = any(e["type"] == "finish" for b in batches for e in b.events)

    def commit(self) -> Offsets:
        """Commit the scratch database, then export the runs that finished."""
        committed = self.writer.commit()
        self._export_pending()
        return committed

    def _export_pending(self) -> None:
        if not self._finished:
            return
        assert self._exporter is not None
        with self.writer.cursor() as con:
            try:
                pending = con.execute(
                    f"SELECT p.* FROM ({PENDING}) p LEFT JOIN _lake.exported e "
                    "ON e.run_id = p.run_id WHERE e.fingerprint IS DISTINCT FROM p.fingerprint "
                    "ORDER BY p.run_id"
                ).fetchall()
                for start in range(0, len(pending), BATCH_RUNS):
                    self._export(con, pending[start : start + BATCH_RUNS])
            except duckdb.Error as exc:
                raise StoreError(f"could not export to the lake {self.lake}: {exc}") from exc
        self._finished = False

    def _export(self, con: duckdb.DuckDBPyConnection, runs: list[export.Run]) -> None:
        """Export a batch of runs, then record them (so a kill in between redoes it)."""
        assert self._exporter is not None
        for run_id, _, _ in runs:
            if not is_valid_id(run_id):
                logger.error("waddle: %s skips run %r: not a valid id", self.name, run_id)
        valid = [run for run in runs if is_valid_id(run[0])]
        current = self._exporter.current(con, valid)
        due = [run for run in valid if run[0] not in current]
        if due:
            self._exporter.export(con, due)
            self.exported += len(due)
        con.execute(
            "INSERT OR REPLACE INTO _lake.exported SELECT unnest($ids), unnest($fingerprints)",
            {"ids": [r[0] for r in runs], "fingerprints": [r[2] for r in runs]},
        )

    def close(self) -> None:
        self.writer.close()


def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all, durably (a kill leaves at most the temporary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text + "\n", encoding="ascii")
    export.sync([temporary])
    os.replace(temporary, path)
    export.sync([path.parent])

"""Per-run checksums of a store and of a lake, computed by DuckDB in a fresh process.

    python checksums.py STORE.duckdb LAKE_DIR   prints {"store": {...}, "lake": {...}}

For every table the lake holds, per run (and per key where the table has one): the row
count and the sum of a hash of every column, read from the store's tables and from
``read_parquet(..., hive_partitioning=true)`` over the lake: equal dicts mean the lake
holds each row of the store exactly once. Not collected by pytest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb

from waddle.store.lake import STORE_TABLES


def checksums(con: duckdb.DuckDBPyConnection, source: str, columns: list[str]) -> dict[str, list]:
    keyed = "key" in columns
    group = "run_id, key" if keyed else "run_id"
    hashed = ", ".join(f'"{c}"::VARCHAR' for c in columns)
    rows = con.execute(
        f"SELECT {group}, count(*), sum(hash({hashed}))::VARCHAR FROM {source} "
        f"GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    return {"/".join(map(str, row[: 2 if keyed else 1])): list(row[-2:]) for row in rows}


def main(store: str, lake: str) -> None:
    con = duckdb.connect()
    con.execute(f"ATTACH '{store}' AS store (READ_ONLY)")
    found: dict[str, dict] = {"store": {}, "lake": {}}
    for table in STORE_TABLES:
        columns = [
            name
            for (name,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE database_name = 'store' "
                "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                [table],
            ).fetchall()
        ]
        scan = (
            f"read_parquet('{lake}/{table}/**/*.parquet', hive_partitioning = true, "
            "hive_types = {'project': VARCHAR, 'run_id': VARCHAR})"
        )
        found["store"][table] = checksums(con, f"store.main.{table}", columns)
        has_files = any(Path(lake, table).glob("*/*/*.parquet"))  # no rows: no files
        found["lake"][table] = checksums(con, scan, columns) if has_files else {}
    print(json.dumps(found))


if __name__ == "__main__":
    main(*sys.argv[1:])

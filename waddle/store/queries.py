"""The read queries over ``waddle.store.schema``'s tables, shared by the CLI and the web API.

Every value reaches DuckDB as a parameter; the only text spliced into SQL is chosen
from the fixed tables below (sort columns, the x column), never taken from a request.
Each function takes a connection or cursor and only reads. Series longer than
``max_points`` are M4-downsampled inside DuckDB (``waddle.store.downsample``), so spikes and
NaN survive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from waddle.errors import UsageError
from waddle.eventlog.record import restore_non_finite
from waddle.ids import check_id
from waddle.store.downsample import MIN_POINTS, bucket_width, buckets_for, m4_sql
from waddle.store.schema import JSON_COLUMNS, RUN_COLUMNS

SORTS = {
    "started_at": "started_at",
    "finished_at": "finished_at",
    "updated_at": "updated_at",
    "name": "name",
    "project": "project",
    "status": "status",
    "last_step": "last_step",
    "duration": "duration",
    "run_id": "run_id",
    "tags": "array_to_string(tags, ' ')",
}
# ``sort=config:KEY`` / ``summary:KEY`` sort by one flattened key of these JSON columns.
JSON_SORTS = ("config", "summary")
X_COLUMNS = {"step": "step", "ts": "ts"}
_LIST_COLUMNS = (
    "run_id, project, name, status, started_at, finished_at, exit_code, last_step, "
    "updated_at, coalesce(finished_at, updated_at) - started_at AS duration, tags, notes, "
    "group_name, job_type, config, summary"
)
_BRIEF_COLUMNS = (
    "run_id, project, name, status, started_at, finished_at, exit_code, last_step, "
    "updated_at, coalesce(finished_at, updated_at) - started_at AS duration"
)
# How the dashboard compares a config value: "=x", ">x", "<x", ">=x", "<=x"; else substring.
_COMPARISONS = (">=", "<=", "=", ">", "<")


def json_value(column: str, key: str) -> tuple[str, list[Any]]:
    """SQL for the value of flattened ``key`` ("a.b": nested, or a literal dotted key) in
    JSON ``column`` (a fixed name) as text, and its parameters (the key never enters SQL)."""

    def pointer(parts: list[str]) -> str:
        return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)

    return (
        f"coalesce(json_extract_string({column}, ?), json_extract_string({column}, ?))",
        [pointer(key.split(".")), pointer([key])],
    )


def display_status(stale_before: float | None) -> tuple[str, list[Any]]:
    """The status the dashboard shows: a run still marked running with no event since
    ``stale_before`` (epoch seconds) is "stale"; None keeps the stored status."""
    if stale_before is None:
        return "coalesce(status, 'running')", []
    return (
        "CASE WHEN coalesce(status, 'running') = 'running' "
        "AND coalesce(updated_at, started_at) < ? THEN 'stale' "
        "ELSE coalesce(status, 'running') END",
        [stale_before],
    )


@dataclass(frozen=True)
class RunFilter:
    """Which runs a listing keeps; every value reaches DuckDB as a parameter."""

    project: str | None = None
    status: str | None = None
    tag: str | None = None
    group: str | None = None
    job_type: str | None = None
    search: str | None = None
    config_key: str | None = None
    config_value: str | None = None
    stale_before: float | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("project", self.project),
            ("group_name", self.group),
            ("job_type", self.job_type),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.status is not None:
            status, status_params = display_status(self.stale_before)
            clauses.append(f"{status} = ?")
            params += [*status_params, self.status]
        if self.tag is not None:
            clauses.append("list_contains(tags, ?)")
            params.append(self.tag)
        if self.search is not None:
            clauses.append(
                "(contains(lower(name), lower(?)) OR contains(lower(run_id), lower(?)) "
                "OR list_bool_or([contains(lower(t), lower(?)) FOR t IN tags]))"
            )
            params += [self.search] * 3
        if self.config_key is not None:
            clause, clause_params = self._config_clause(self.config_key, self.config_value)
            clauses.append(clause)
            params += clause_params
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    @staticmethod
    def _config_clause(key: str, wanted: str | None) -> tuple[str, list[Any]]:
        """The run has config ``key``; with ``wanted``, its value matches it (text as a
        case-insensitive substring; "=x" exactly or as the same number; ">x" etc. as numbers)."""
        value, params = json_value("config", key)
        text = (wanted or "").strip()
        if not text:
            return f"{value} IS NOT NULL", params
        op = next((op for op in _COMPARISONS if text.startswith(op)), None)
        if op is None:
            return f"contains(lower({value}), lower(?))", [*params, text]
        operand = text[len(op) :].strip()
        number = f"try_cast({value} AS DOUBLE)"
        if op == "=":
            return (
                f"({value} = ? OR {number} = try_cast(? AS DOUBLE))",
                [*params, operand, *params, operand],
            )
        return f"{number} {op} try_cast(? AS DOUBLE)", [*params, operand]


@dataclass(frozen=True)
class RunSort:
    """An order of runs: a ``SORTS`` column, or a flattened config/summary key (numbers
    as numbers, then text); empty values last either way, ties by run id."""

    column: str = "started_at"
    key: str | None = None
    descending: bool = True

    def order_by(self, stale_before: float | None = None) -> tuple[str, list[Any]]:
        way = "DESC" if self.descending else "ASC"
        if self.column in JSON_SORTS and self.key is not None:
            value, params = json_value(self.column, self.key)
            order = f"try_cast({value} AS DOUBLE) {way} NULLS LAST, {value} {way} NULLS LAST"
            return f"{order}, run_id", [*params, *params]
        if self.column == "status":
            status, params = display_status(stale_before)
            return f"{status} {way} NULLS LAST, run_id", params
        return f"{SORTS[self.column]} {way} NULLS LAST, run_id", []


def _row(columns: list[str] | tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """A row as a dict, with its JSON columns as Python values (summary NaN restored)."""
    row = dict(zip(columns, values, strict=True))
    for name in (*JSON_COLUMNS, "dropped"):
        if isinstance(row.get(name), str):
            row[name] = orjson.loads(row[name])
    if isinstance(row.get("summary"), dict):
        restore_non_finite(row["summary"])
    return row


def _rows(cursor: Any) -> list[dict[str, Any]]:
    columns = [d[0] for d in cursor.description]
    return [_row(columns, values) for values in cursor.fetchall()]


def list_runs(con: Any, project: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first: identity, status, times, duration and last step."""
    query = (
        "SELECT run_id, project, name, status, started_at, finished_at, exit_code, "
        "last_step, updated_at, "
        "coalesce(finished_at, updated_at) - started_at AS duration FROM runs"
    )
    params: list[Any] = []
    if project is not None:
        query += " WHERE project = ?"
        params.append(project)
    return _rows(con.execute(query + " ORDER BY started_at DESC NULLS LAST, run_id", params))


def get_run(con: Any, run_id: str) -> dict[str, Any] | None:
    """One run with config, summary, context and metric_defs as Python values; None if unknown.

    ``metric_defs`` is ``{}`` when the run defined none, also in a store older than the
    column (read-only, before a writer added it).
    """
    cursor = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
    values = cursor.fetchone()
    if values is None:
        return None
    return _run([d[0] for d in cursor.description], values)


def get_runs(con: Any, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``get_run`` of several runs in one query (a writer meeting thousands of live runs
    at once pays one scan, not one per run), by run id; unknown ones are left out."""
    cursor = con.execute(
        "SELECT * FROM runs WHERE run_id IN (SELECT unnest(?::VARCHAR[]))", [run_ids]
    )
    columns = [d[0] for d in cursor.description]
    return {run["run_id"]: run for run in (_run(columns, values) for values in cursor.fetchall())}


def _run(columns: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    row = _row(columns, values)
    row["metric_defs"] = row.get("metric_defs") or {}
    return {column: row[column] for column in RUN_COLUMNS}


def metric_keys(con: Any, run_id: str) -> list[str]:
    """The numeric metric keys a run logged, sorted."""
    rows = con.execute(
        "SELECT DISTINCT key FROM metrics WHERE run_id = ? ORDER BY key", [run_id]
    ).fetchall()
    return [key for (key,) in rows]


def find_runs(
    con: Any, where: RunFilter, sort: RunSort, limit: int, offset: int, brief: bool = False
) -> tuple[list[dict[str, Any]], int]:
    """A page of runs matching ``where``, sorted, and how many match in all.

    One count and one top-N scan of ``runs`` (no per-run subquery), so a page costs about
    the same at ten thousand runs as at ten. ``brief`` leaves out tags, notes, group,
    job type, config and summary (the seed's ``/runs``).
    """
    clause, params = where.where()
    order, order_params = sort.order_by(where.stale_before)
    columns = _BRIEF_COLUMNS if brief else _LIST_COLUMNS
    (total,) = con.execute(f"SELECT count(*) FROM runs{clause}", params).fetchone()
    cursor = con.execute(
        f"SELECT {columns} FROM runs{clause} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, *order_params, limit, offset],
    )
    return _rows(cursor), total


_MEDIA_TYPES = "['image', 'histogram', 'table', 'audio', 'video']"
_FACET_FIELDS = f"""
nodes AS MATERIALIZED (
    SELECT 'config' AS field, run_id, t.* FROM scoped, json_tree(config) AS t
    UNION ALL
    SELECT 'summary', run_id, t.* FROM scoped, json_tree(summary) AS t
),
opaque AS (
    SELECT field, run_id, fullkey FROM nodes
    WHERE type = 'ARRAY' OR (type = 'OBJECT'
        AND list_contains({_MEDIA_TYPES}, json_extract_string(value, '$._type')))
),
leaves AS (
    SELECT nodes.field, nodes.fullkey, nodes.value FROM nodes
    ANTI JOIN opaque ON opaque.field = nodes.field AND opaque.run_id = nodes.run_id
        AND opaque.fullkey = nodes.path
    WHERE nodes.fullkey <> '$' AND NOT contains(nodes.path, '[')
        AND (nodes.type <> 'OBJECT' OR nodes.value = '{{}}'
             OR list_contains({_MEDIA_TYPES}, json_extract_string(nodes.value, '$._type')))
)
"""


def run_facets(con: Any, where: RunFilter) -> dict[str, Any]:
    """What the runs table offers for the runs matching ``where``: their tags, and each
    flattened config and summary key with how many runs have it and how many distinct
    values it takes (a key differs between runs when values > 1 or runs < total).

    Flattening follows the dashboard's: nested objects are walked, lists and typed media
    values are leaves. Keys are named by their path joined with "." (``json_value``
    reads them back).
    """
    clause, params = where.where()
    scoped = f"WITH scoped AS (SELECT run_id, config, summary, tags FROM runs{clause}),"
    (total,) = con.execute(f"SELECT count(*) FROM runs{clause}", params).fetchone()
    tags = con.execute(
        f"{scoped} t AS (SELECT DISTINCT unnest(tags) AS tag FROM scoped) "
        "SELECT tag FROM t WHERE tag IS NOT NULL ORDER BY tag",
        params,
    ).fetchall()
    keys = con.execute(
        f"{scoped} {_FACET_FIELDS} "
        "SELECT field, regexp_replace(substr(fullkey, 3), '\"', '', 'g') AS key, "
        "count(*) AS runs, count(DISTINCT value) AS values FROM leaves "
        "GROUP BY field, key ORDER BY field, runs DESC, key",
        params,
    ).fetchall()
    facets: dict[str, Any] = {"total": total, "tags": [tag for (tag,) in tags]}
    for field in JSON_SORTS:
        facets[field] = [
            {"key": key, "runs": runs, "values": values}
            for f, key, runs, values in keys
            if f == field
        ]
    return facets


def projects(con: Any) -> list[dict[str, Any]]:
    """Each project with its number of runs and latest start."""
    cursor = con.execute(
        "SELECT project AS name, count(*) AS runs, max(started_at) AS last_started_at "
        "FROM runs GROUP BY project ORDER BY last_started_at DESC NULLS LAST, name"
    )
    return _rows(cursor)


def system_keys(con: Any, run_id: str) -> list[str]:
    rows = con.execute(
        "SELECT DISTINCT key FROM system WHERE run_id = ? ORDER BY key", [run_id]
    ).fetchall()
    return [key for (key,) in rows]


def streams(con: Any, run_id: str) -> list[dict[str, Any]]:
    cursor = con.execute(
        "SELECT stream, rank, status, started_at, finished_at, exit_code, dropped "
        "FROM streams WHERE run_id = ? ORDER BY rank",
        [run_id],
    )
    return _rows(cursor)


XRange = tuple[float | None, float | None]
WHOLE: XRange = (None, None)


def series(
    con: Any, source: str, params: list[Any], max_points: int, x_range: XRange = WHOLE
) -> tuple[list[Any], list[Any], int]:
    """x and y of ``source`` (a query with columns x, y), M4-downsampled past max_points.

    ``x_range`` keeps the points with x from its low to its high end (None: open), so
    a zoomed chart gets up to ``max_points`` of its window, not of the whole series.
    Also returns the number of points before downsampling (in the range).
    """
    if max_points < MIN_POINTS:
        raise UsageError(f"max_points must be at least {MIN_POINTS}")
    for bound, test in zip(x_range, ("x >= ?", "x <= ?"), strict=True):
        if bound is not None:
            source, params = f"SELECT * FROM ({source}) WHERE {test}", [*params, bound]
    count, lo, hi = con.execute(
        f"SELECT count(*), min(x), max(x) FROM ({source})", params
    ).fetchone()
    if count <= max_points:
        rows = con.execute(f"SELECT x, y FROM ({source}) ORDER BY x, y", params).fetchall()
    else:
        buckets = buckets_for(max_points)
        width = bucket_width(lo, hi, buckets)
        rows = con.execute(m4_sql(source), [lo, width, buckets - 1, *params]).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows], count


def metric_series(
    con: Any, run_id: str, key: str, x: str, max_points: int, x_range: XRange = WHOLE
) -> tuple[list[Any], list[Any], int]:
    source = f"SELECT {X_COLUMNS[x]} AS x, value AS y FROM metrics WHERE run_id = ? AND key = ?"
    return series(con, source, [run_id, key], max_points, x_range)


def metric_by_metric(
    con: Any, run_id: str, key: str, x_key: str, max_points: int, x_range: XRange = WHOLE
) -> tuple[list[Any], list[Any], int]:
    """``key`` against ``x_key`` of the same run, joined on step: how HF and Lightning
    curves logged on different steps line up on a ``global_step`` metric.

    A step where ``x_key`` was logged more than once takes its latest (finite) value; steps
    without ``x_key`` are left out.
    """
    source = (
        "SELECT sx.x AS x, m.value AS y FROM metrics m JOIN ("
        "SELECT step, arg_max(value, ts) AS x FROM metrics "
        "WHERE run_id = ? AND key = ? AND isfinite(value) GROUP BY step"
        ") sx ON sx.step = m.step WHERE m.run_id = ? AND m.key = ?"
    )
    return series(con, source, [run_id, x_key, run_id, key], max_points, x_range)


def system_series(
    con: Any, run_id: str, key: str, rank: int | None, max_points: int, x_range: XRange = WHOLE
) -> tuple[list[Any], list[Any], int]:
    source = "SELECT ts AS x, value AS y FROM system WHERE run_id = ? AND key = ?"
    params: list[Any] = [run_id, key]
    if rank is not None:
        source += " AND rank = ?"
        params.append(rank)
    return series(con, source, params, max_points, x_range)


def console_lines(con: Any, run_id: str, rank: int, after: int, limit: int) -> list[dict[str, Any]]:
    """Console lines of one process of a run after seq ``after``, oldest first."""
    return _rows(
        con.execute(
            "SELECT seq, ts, source, text FROM console WHERE run_id = ? AND rank = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            [run_id, rank, after, limit],
        )
    )


def quarantined(con: Any) -> int:
    """How many events and bad lines the writer set aside (the ``quarantine`` table)."""
    ((count,),) = con.execute("SELECT count(*) FROM quarantine").fetchall()
    return int(count)


def run_exists(con: Any, run_id: str) -> bool:
    return con.execute("SELECT 1 FROM runs WHERE run_id = ?", [run_id]).fetchone() is not None


def export_metrics(con: Any, run_id: str, target: Path | str, fmt: str) -> int:
    """Write a run's metrics (key, step, ts, value) to ``target`` as csv or parquet.

    Returns the number of rows written.
    """
    if fmt not in ("csv", "parquet"):
        raise UsageError(f"format must be csv or parquet, got {fmt!r}")
    check_id(run_id, "run id")
    literal = str(target).replace("'", "''")
    options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
    con.execute(
        f"COPY (SELECT key, step, ts, value FROM metrics WHERE run_id = '{run_id}' "
        f"ORDER BY key, step, ts) TO '{literal}' ({options})"
    )
    (count,) = con.execute("SELECT count(*) FROM metrics WHERE run_id = ?", [run_id]).fetchone()
    return count


def blob_format(con: Any, sha256: str) -> str | None:
    """The format a logged value recorded for blob ``sha256`` (``png``, ``wav``, ...).

    A scan of ``media`` (no index on ``sha256``): the server asks only for blobs whose
    bytes do not start with an image signature.
    """
    found = con.execute("SELECT format FROM media WHERE sha256 = ? LIMIT 1", [sha256]).fetchone()
    return None if found is None else str(found[0])


MEDIA_FIELDS = ("step", "idx", "kind", "sha256", "size", "format", "width", "height", "caption")


def media_keys(con: Any, run_id: str) -> list[dict[str, Any]]:
    """The media keys of a run, histograms included: ``{key, kind, steps, last_step}``."""
    return _rows(
        con.execute(
            "SELECT key, min(kind) AS kind, count(DISTINCT step) AS steps, max(step) AS last_step "
            "FROM (SELECT key, kind, step FROM media WHERE run_id = $run "
            "UNION ALL SELECT key, 'histogram', step FROM histograms WHERE run_id = $run) "
            "GROUP BY key ORDER BY key",
            {"run": run_id},
        )
    )


def media_values(con: Any, run_id: str, key: str, step: int | None) -> list[dict[str, Any]]:
    """The media values of one key, of one step or all, ordered by step and list position."""
    where = "run_id = ? AND key = ?"
    params: list[Any] = [run_id, key]
    if step is not None:
        where, params = where + " AND step = ?", [*params, step]
    return _rows(
        con.execute(
            f"SELECT {', '.join(MEDIA_FIELDS)} FROM media WHERE {where} ORDER BY step, idx, ts",
            params,
        )
    )


def histogram_series(con: Any, run_id: str, key: str) -> list[dict[str, Any]]:
    """The histograms of one key, ordered by step."""
    return _rows(
        con.execute(
            "SELECT step, bins, counts FROM histograms WHERE run_id = ? AND key = ? "
            "ORDER BY step, ts",
            [run_id, key],
        )
    )


def table_value(con: Any, run_id: str, key: str, step: int | None) -> dict[str, Any] | None:
    """The table logged under ``key`` at ``step`` (the latest step when None)."""
    where = "run_id = ? AND key = ? AND kind = 'table'"
    params: list[Any] = [run_id, key]
    if step is not None:
        where, params = where + " AND step = ?", [*params, step]
    found = con.execute(
        f"SELECT step, sha256, size FROM media WHERE {where} ORDER BY step DESC, ts DESC LIMIT 1",
        params,
    ).fetchone()
    return None if found is None else _row(("step", "sha256", "size"), found)


@dataclass(frozen=True)
class TablePage:
    """Which rows of a logged table to answer: a filter, a sort column, a window."""

    offset: int = 0
    limit: int = 50
    sort: str | None = None
    desc: bool = False
    q: str | None = None


_TABLE_ROWS = """
WITH doc AS (
    SELECT columns, data FROM read_json(
        $path, columns = {'columns': 'VARCHAR[]', 'data': 'JSON[]'},
        format = 'auto', maximum_object_size = $size
    )
),
cells AS (
    SELECT generate_subscripts(data, 1) AS i, from_json(unnest(data), '["JSON"]') AS row
    FROM doc
),
kept AS (
    SELECT i, row FROM cells
    WHERE $q IS NULL OR list_bool_or(
        list_transform(row, lambda c: contains(lower(json_extract_string(c, '$')), $q))
    )
)
"""


def table_rows(con: Any, path: Path | str, size: int, page: TablePage) -> dict[str, Any]:
    """A page of the table blob at ``path`` (JSON ``{"columns", "data"}``), read by DuckDB.

    Filter (``q``: a cell contains it, case-insensitive), sort (numbers as numbers, then
    text) and window all run in DuckDB, so only the page reaches Python. DuckDB parses
    the blob as one JSON document: its peak memory grows with the blob's size, which is
    why the server refuses tables over ``waddle.web.media_api.MAX_TABLE_BYTES``.
    """
    bound = {"path": str(path), "size": max(size + 1, 1 << 20)}
    ((columns,),) = con.execute(
        "SELECT columns FROM read_json($path, columns = {'columns': 'VARCHAR[]'}, "
        "format = 'auto', maximum_object_size = $size)",
        bound,
    ).fetchall()
    columns = list(columns or [])
    order = "i"
    if page.sort is not None:
        if page.sort not in columns:
            raise UsageError(f"no column {page.sort!r} in this table; it has {columns}")
        cell = f"json_extract_string(row[{columns.index(page.sort) + 1}], '$')"
        way = "DESC" if page.desc else "ASC"
        order = f"try_cast({cell} AS DOUBLE) {way} NULLS LAST, {cell} {way} NULLS LAST, i"
    params = {**bound, "q": page.q.lower() if page.q else None}
    total = con.execute(_TABLE_ROWS + "SELECT count(*) FROM kept", params).fetchone()[0]
    rows = con.execute(
        _TABLE_ROWS
        + f"SELECT to_json(row)::VARCHAR FROM kept ORDER BY {order} LIMIT $limit OFFSET $offset",
        {**params, "limit": page.limit, "offset": page.offset},
    ).fetchall()
    return {
        "columns": columns,
        # json, not orjson: a table written by Python's json module may hold NaN.
        "rows": [json.loads(text) for (text,) in rows],
        "total": total,
    }


def run_artifacts(con: Any, run_id: str) -> dict[str, Any]:
    """A run's saved files, the artifact versions it logged and those it used; each row's
    ``ts`` is its event's, which tells a live page which events the tables hold."""
    files = _rows(
        con.execute(
            "SELECT kind, name, path, size, sha256, ts FROM artifacts WHERE run_id = ? "
            "ORDER BY ts, name",
            [run_id],
        )
    )
    logged = _rows(
        con.execute(
            "SELECT name, type, version, digest, aliases, size, files, ts FROM artifact_versions "
            "WHERE run_id = ? ORDER BY name, version, ts",
            [run_id],
        )
    )
    used = _rows(
        con.execute(
            "SELECT name, version, alias, ts FROM artifact_uses WHERE run_id = ? "
            "ORDER BY name, version, ts",
            [run_id],
        )
    )
    return {"files": files, "logged": logged, "used": used}


def artifact_lineage(con: Any, name: str) -> dict[str, Any] | None:
    """Every version of an artifact: the run that first logged it, the runs that used it.

    An alias belongs to the version whose latest ``artifact_version`` event names it
    (``latest`` moves to each new version, as in the artifact index).
    """
    events = con.execute(
        "SELECT version, digest, aliases, size, files, run_id, metadata, type "
        "FROM artifact_versions WHERE name = ? ORDER BY ts, version",
        [name],
    ).fetchall()
    if not events:
        return None
    used = dict(
        con.execute(
            "SELECT digest, list(DISTINCT run_id ORDER BY run_id) FROM artifact_uses "
            "WHERE name = ? GROUP BY digest",
            [name],
        ).fetchall()
    )
    versions: dict[int, dict[str, Any]] = {}
    owner: dict[str, int] = {}
    for version, digest, aliases, size, files, run_id, metadata, _ in events:
        versions.setdefault(
            version,
            {
                "version": version,
                "digest": digest,
                "aliases": [],
                "size": size,
                "files": files,
                "run_id": run_id,
                "used_by": list(used.get(digest, [])),
                "metadata": orjson.loads(metadata) if metadata else {},
            },
        )
        owner.update(dict.fromkeys(aliases or [], version))
    for alias, version in owner.items():
        versions[version]["aliases"].append(alias)
    return {
        "name": name,
        "type": events[-1][7],
        "versions": [versions[version] for version in sorted(versions)],
    }

"""The read endpoints: the seed's ``/info``, ``/runs``, ``/run/{id}`` and the ``/api/`` set.

Tables come from the DuckDB store (a cursor per request, in a worker thread); a run's
events come from the log itself, which is the source of truth and may be a poll ahead
of the tables. Values that JSON cannot hold are spelled as in the log ("NaN",
"Infinity", "-Infinity"). Paths, ids and parameters are checked by ``params``; a store
that fails, or whose writer cannot write (a full disk), answers 503 (``store_unavailable``),
never 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import duckdb
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from waddle.consumers.broadcast import locate, read_after
from waddle.errors import StoreError
from waddle.event_types import Event
from waddle.eventlog.reader import LogReader
from waddle.store import queries
from waddle.web import params
from waddle.web.errors import RequestError, bad_request, json_response, not_found

T = TypeVar("T")
MAX_POINTS = 100_000
DEFAULT_POINTS = 2000
MAX_PAGE = 10_000
DEFAULT_RUNS_PAGE = 100


async def query(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(cursor, *args)`` in a worker thread; store failures become a 503."""
    cursor_factory = request.app.state.cursor

    def work() -> T:
        cursor = cursor_factory()
        try:
            return fn(cursor, *args)
        finally:
            cursor.close()

    try:
        return await run_in_threadpool(work)
    except (duckdb.Error, StoreError) as exc:
        raise RequestError(
            503,
            "store_unavailable",
            f"the database cannot answer now ({type(exc).__name__}); the server retries by "
            "itself and catches up, and its log names the cause (e.g. a full disk)",
        ) from exc


async def info(request: Request) -> Response:
    projects = await query(request, queries.projects)
    return json_response(
        {"projects": projects, "quarantined": await query(request, queries.quarantined)}
    )


async def runs(request: Request) -> Response:
    """The seed's run list: brief rows (no config, summary or tags), a page of up to
    ``MAX_PAGE`` by default, with the same filters, sorts and paging as ``/api/runs``."""
    return await _runs_page(request, MAX_PAGE, brief=True)


async def run(request: Request) -> Response:
    """One run (config, summary, context, status) and a page of its events from the log."""
    run_id = params.run_id(request)
    stream = params.optional_id(request, "stream") or run_id
    if stream != run_id and not _is_rank_stream(run_id, stream):
        raise bad_request(
            "invalid_parameter",
            f"stream {stream!r} is not a stream of run {run_id!r}",
            field="stream",
        )
    after = params.integer(request, "after", -1, -1, 2**62)
    limit = params.integer(request, "limit", 1000, 1, MAX_PAGE)
    record = await query(request, queries.get_run, run_id)
    reader: LogReader = request.app.state.reader
    if record is None and not (reader.log_dir / stream).is_dir():
        raise not_found("run", run_id)
    events, more = await run_in_threadpool(_events_page, reader, stream, after, limit)
    record = record or {"run_id": run_id}
    record["streams"] = await query(request, queries.streams, run_id)
    return json_response(
        {
            "run": record,
            "stream": stream,
            "events": events,
            "next_after": events[-1]["seq"] if events else after,
            "more": more,
        }
    )


def _is_rank_stream(run_id: str, stream: str) -> bool:
    head, _, rank = stream.rpartition(".")
    return head == run_id and rank.isdigit()


def _events_page(
    reader: LogReader, stream: str, after: int, limit: int
) -> tuple[list[Event], bool]:
    """Up to ``limit`` events after seq ``after``, and whether more follow now."""
    events: list[Event] = []
    offset = locate(reader, stream, after)
    while len(events) <= limit:
        batch = read_after(reader, stream, offset)
        if not batch.events:
            break
        events += batch.events
        offset = batch.offset
    return events[:limit], len(events) > limit


async def api_runs(request: Request) -> Response:
    """A page of runs (the dashboard's runs table), filtered and sorted by the store."""
    return await _runs_page(request, DEFAULT_RUNS_PAGE, brief=False)


async def api_facets(request: Request) -> Response:
    """What the runs table offers for the runs a filter keeps: tags, config and summary keys."""
    facets = await query(request, queries.run_facets, _run_filter(request))
    return json_response(facets)


async def _runs_page(request: Request, default_limit: int, brief: bool) -> Response:
    where = _run_filter(request)
    column, key = params.sort(request, tuple(queries.SORTS), queries.JSON_SORTS, "started_at")
    order = params.choice(request, "order", ("asc", "desc"), "desc")
    sort = queries.RunSort(column, key, order == "desc")
    limit = params.integer(request, "limit", default_limit, 1, MAX_PAGE)
    offset = params.integer(request, "offset", 0, 0, 2**62)
    rows, total = await query(request, queries.find_runs, where, sort, limit, offset, brief)
    following = offset + len(rows)
    return json_response(
        {
            "runs": rows,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next_offset": following if following < total else None,
        }
    )


def _run_filter(request: Request) -> queries.RunFilter:
    stale_after = params.number(request, "stale_after")
    if stale_after is not None and stale_after <= 0:
        raise bad_request(
            "invalid_parameter", "stale_after must be a positive number", field="stale_after"
        )
    return queries.RunFilter(
        project=params.text(request, "project"),
        status=params.text(request, "status"),
        tag=params.text(request, "tag"),
        group=params.text(request, "group"),
        job_type=params.text(request, "job_type"),
        search=params.text(request, "q"),
        config_key=params.text(request, "config_key", params.MAX_KEY_LENGTH),
        config_value=params.text(request, "config_value"),
        stale_before=None if stale_after is None else time.time() - stale_after,
    )


async def api_run(request: Request) -> Response:
    run_id = params.run_id(request)
    record = await query(request, queries.get_run, run_id)
    if record is None:
        raise not_found("run", run_id)
    record["streams"] = await query(request, queries.streams, run_id)
    return json_response(record)


async def api_keys(request: Request) -> Response:
    run_id = params.run_id(request)
    await _require_run(request, run_id)
    metrics = await query(request, queries.metric_keys, run_id)
    system = await query(request, queries.system_keys, run_id)
    return json_response({"run_id": run_id, "metrics": metrics, "system": system})


async def api_metrics(request: Request) -> Response:
    """Metric series against step, time, or (``x_metric``) another metric of the run."""
    x_metric = params.text(request, "x_metric", params.MAX_KEY_LENGTH)
    if x_metric:
        return await _series_response(
            request,
            "metric",
            queries.metric_keys,
            lambda con, run_id, key, max_points, x_range: queries.metric_by_metric(
                con, run_id, key, x_metric, max_points, x_range
            ),
            x_metric,
        )
    x = params.choice(request, "x", tuple(queries.X_COLUMNS), "step")
    return await _series_response(
        request,
        x,
        queries.metric_keys,
        lambda con, run_id, key, max_points, x_range: queries.metric_series(
            con, run_id, key, x, max_points, x_range
        ),
    )


async def api_system(request: Request) -> Response:
    rank = params.integer(request, "rank", -1, -1, 1 << 20)
    return await _series_response(
        request,
        "ts",
        queries.system_keys,
        lambda con, run_id, key, max_points, x_range: queries.system_series(
            con, run_id, key, None if rank < 0 else rank, max_points, x_range
        ),
    )


async def _series_response(
    request: Request,
    x: str,
    all_keys: Callable[[Any, str], list[str]],
    fetch: Callable[[Any, str, str, int, queries.XRange], tuple[list[Any], list[Any], int]],
    x_metric: str | None = None,
) -> Response:
    """The downsampled series of the requested keys (all of the run's when none given)."""
    run_id = params.run_id(request)
    max_points = params.integer(request, "max_points", DEFAULT_POINTS, 4, MAX_POINTS)
    x_range = params.x_range(request)
    keys = params.keys(request)
    await _require_run(request, run_id)
    if keys is None:
        keys = await query(request, all_keys, run_id)
    series = []
    for key in keys:
        xs, ys, count = await query(request, fetch, run_id, key, max_points, x_range)
        series.append(_series(key, xs, ys, count))
    x_min, x_max = x_range
    return json_response(
        {
            "run_id": run_id,
            "x": x,
            "max_points": max_points,
            "x_min": x_min,
            "x_max": x_max,
            **({"x_metric": x_metric} if x_metric else {}),
            "series": series,
        }
    )


async def api_console(request: Request) -> Response:
    run_id = params.run_id(request)
    rank = params.integer(request, "rank", 0, 0, 1 << 20)
    after = params.integer(request, "after", -1, -1, 2**62)
    limit = params.integer(request, "limit", 1000, 1, MAX_PAGE)
    await _require_run(request, run_id)
    lines = await query(request, queries.console_lines, run_id, rank, after, limit)
    return json_response(
        {
            "run_id": run_id,
            "rank": rank,
            "lines": lines,
            "next_after": lines[-1]["seq"] if lines else after,
        }
    )


async def _require_run(request: Request, run_id: str) -> None:
    if not await query(request, queries.run_exists, run_id):
        raise not_found("run", run_id)


def _series(key: str, xs: list[Any], ys: list[Any], count: int) -> dict[str, Any]:
    return {"key": key, "x": xs, "y": ys, "count": count, "downsampled": len(xs) < count}

"""The media endpoints: a run's images, audio, video, histograms, tables and artifacts.

Values come from the DuckDB store's media tables (docs/schema.md); the bytes they name
are served by ``/blobs/{sha256}`` (``waddle.web.blobs``). Tables are paged, sorted and
filtered by DuckDB reading the table's blob, so a client never downloads a whole table;
DuckDB parses a table blob as one JSON document, so tables over ``MAX_TABLE_BYTES`` are
refused (413 ``table_too_large``) rather than risk the server's memory.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
from waddle.store import queries
from waddle.web import params
from waddle.web.api import MAX_PAGE, query
from waddle.web.errors import RequestError, bad_request, json_response, not_found

MAX_TABLE_BYTES = 256 * 1024 * 1024
_STEP_MAX = 2**63 - 1


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    if not key or len(key) > params.MAX_KEY_LENGTH or "\x00" in key:
        raise bad_request(
            "invalid_parameter",
            f"a key is text of 1 to {params.MAX_KEY_LENGTH} characters",
            field="key",
        )
    return key


def _step(request: Request) -> int | None:
    if request.query_params.get("step") in (None, ""):
        return None
    return params.integer(request, "step", 0, 0, _STEP_MAX)


async def _require_run(request: Request, run_id: str) -> None:
    if not await query(request, queries.run_exists, run_id):
        raise not_found("run", run_id)


async def run_media(request: Request) -> Response:
    """The media keys of a run (histogram keys included, as kind ``histogram``)."""
    run_id = params.run_id(request)
    await _require_run(request, run_id)
    return json_response(await query(request, queries.media_keys, run_id))


async def media_values(request: Request) -> Response:
    """The values of one media key: one step, or every step."""
    run_id, key, step = params.run_id(request), _key(request), _step(request)
    await _require_run(request, run_id)
    return json_response(await query(request, queries.media_values, run_id, key, step))


async def histograms(request: Request) -> Response:
    """The histograms of one key over steps."""
    run_id, key = params.run_id(request), _key(request)
    await _require_run(request, run_id)
    return json_response(await query(request, queries.histogram_series, run_id, key))


async def table(request: Request) -> Response:
    """One page of a logged table, sorted and filtered by the server."""
    run_id, key, step = params.run_id(request), _key(request), _step(request)
    page = queries.TablePage(
        offset=params.integer(request, "offset", 0, 0, 2**62),
        limit=params.integer(request, "limit", 50, 1, MAX_PAGE),
        sort=params.text(request, "sort"),
        desc=params.choice(request, "desc", ("true", "false"), "false") == "true",
        q=params.text(request, "q") or None,
    )
    await _require_run(request, run_id)
    found = await query(request, queries.table_value, run_id, key, step)
    if found is None:
        raise not_found("table", key if step is None else f"{key} at step {step}")
    if found["size"] > MAX_TABLE_BYTES:
        raise RequestError(
            413,
            "table_too_large",
            f"this table is {found['size']} bytes; the server pages tables of at most "
            f"{MAX_TABLE_BYTES} bytes: read its blob with DuckDB instead",
        )
    path = BlobStore(request.app.state.settings.root).path(found["sha256"])
    if not await run_in_threadpool(path.is_file):
        raise not_found("blob", found["sha256"])
    try:
        body = await query(request, queries.table_rows, path, found["size"], page)
    except RequestError:
        raise
    except UsageError as exc:  # a sort column the table does not have
        raise bad_request("invalid_parameter", str(exc), field="sort") from None
    return json_response({**body, "step": found["step"]})


async def run_artifacts(request: Request) -> Response:
    """A run's saved files, the artifact versions it logged, those it used."""
    run_id = params.run_id(request)
    await _require_run(request, run_id)
    return json_response(await query(request, queries.run_artifacts, run_id))


async def artifact(request: Request) -> Response:
    """Every version of one artifact, with its lineage."""
    name: str = request.path_params["name"]
    if not name or len(name) > params.MAX_KEY_LENGTH or "\x00" in name:
        raise bad_request("invalid_parameter", "an artifact name is short text", field="name")
    found = await query(request, queries.artifact_lineage, name)
    if found is None:
        raise not_found("artifact", name)
    return json_response(found)

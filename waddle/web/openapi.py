"""The OpenAPI 3.1 description served at ``/openapi.json``, written by hand.

A test fuzzes the server against it (every documented input must get a documented
status, never a 500) and checks that every route is described, so it stays accurate.
The WebSocket protocol is outside OpenAPI's reach; docs/api.md describes it.
"""

from __future__ import annotations

from typing import Any

from waddle.ids import ID_REGEX

_ID = {"type": "string", "pattern": ID_REGEX}
_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code"},
        "detail": {"type": "string", "description": "what is wrong and how to fix it"},
        "line": {"type": "integer", "description": "1-based line (NDJSON) or list position"},
        "field": {"type": ["string", "null"]},
        "expected": {"type": "integer", "description": "the next seq the host expects"},
        "seq": {"type": "integer", "description": "the highest seq the host holds"},
    },
}
_NUMBER = {
    "oneOf": [
        {"type": "number"},
        {"type": "null"},
        {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
    ]
}
_RUN = {
    "type": "object",
    "required": ["run_id"],
    "properties": {
        "run_id": _ID,
        "project": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "status": {
            "type": ["string", "null"],
            "enum": ["running", "finished", "failed", "killed", None],
        },
        "started_at": {"type": ["number", "null"]},
        "finished_at": {"type": ["number", "null"]},
        "exit_code": {"type": ["integer", "null"]},
        "last_step": {"type": ["integer", "null"]},
        "config": {"type": ["object", "null"]},
        "summary": {"type": ["object", "null"]},
        "context": {"type": ["object", "null"]},
        "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        "metric_defs": {
            "type": "object",
            "description": "define_metric: {metric or glob: {step_metric, summary, hidden, goal}}",
            "additionalProperties": {"type": "object"},
        },
    },
}
_SERIES = {
    "type": "object",
    "required": ["run_id", "x", "max_points", "series"],
    "properties": {
        "run_id": _ID,
        "x": {"type": "string", "enum": ["step", "ts", "metric"]},
        "x_metric": {"type": "string", "description": "the metric on x when x is metric"},
        "max_points": {"type": "integer"},
        "x_min": {"type": ["number", "null"], "description": "the range asked for, if any"},
        "x_max": {"type": ["number", "null"]},
        "series": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["key", "x", "y", "count", "downsampled"],
                "properties": {
                    "key": {"type": "string"},
                    "x": {"type": "array", "items": {"type": "number"}},
                    "y": {"type": "array", "items": _NUMBER},
                    "count": {"type": "integer", "description": "points before downsampling"},
                    "downsampled": {"type": "boolean"},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "invalid input, named in the body",
        401: "the token is missing or wrong",
        403: "a Host or Origin this server does not answer",
        404: "no such run",
        409: "a seq gap, or a stream written by a local process",
        413: "the body is over the limit",
        415: "a content type other than JSON or NDJSON",
        503: "the log or the database cannot take or answer this now",
    }
    return {
        str(code): _json({"$ref": "#/components/schemas/Error"}, reasons[code]) for code in codes
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": _ID}
_COMMON = (400, 401, 403, 503)
_GZIP = {
    "name": "Content-Encoding",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "enum": ["gzip", "identity"]},
    "description": "gzip: the body is gzip-compressed (as relays send)",
}
_PART = {
    "type": "object",
    "required": ["stream", "status"],
    "properties": {
        "stream": _ID,
        "status": {"type": "integer", "enum": [200, 400, 409, 503]},
        "seq": {"type": "integer", "description": "highest seq held"},
        "written": {"type": "integer"},
        "duplicates": {"type": "integer"},
        "error": {"type": "string", "description": "a refused part: the error code"},
        "message": {"type": "string", "description": "a refused part: what is wrong"},
        "line": {"type": "integer", "description": "1-based line of the whole body"},
        "field": {"type": ["string", "null"]},
        "expected": {"type": "integer", "description": "the next seq the host expects"},
    },
}
_INGEST_BATCH = {
    "post": {
        "summary": "Append events of several streams, each part answered on its own",
        "description": 'NDJSON parts: a header line {"stream": ID, "events": N} and N '
        "event lines of that stream (docs/api.md)",
        "parameters": [_GZIP],
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        "responses": {
            "200": _json(
                {
                    "type": "object",
                    "required": ["streams"],
                    "properties": {"streams": {"type": "array", "items": _PART}},
                }
            ),
            **_errors(*_COMMON, 413, 415),
        },
    }
}
_MAX_POINTS = _query(
    "max_points",
    {"type": "integer", "minimum": 4, "maximum": 100000},
    "points per series at most (M4 downsampling keeps spikes)",
)
_KEYS = _query("keys", {"type": "string"}, "comma-separated keys; all keys when absent")
_RUN_FILTERS = [
    _query("project", {"type": "string"}, "project equals"),
    _query(
        "status",
        {"type": "string"},
        "running, finished, failed, killed; with stale_after also stale",
    ),
    _query(
        "stale_after", {"type": "number", "exclusiveMinimum": 0}, "seconds: a silent run is stale"
    ),
    _query("tag", {"type": "string"}, "has this tag"),
    _query("group", {"type": "string"}, "group equals"),
    _query("job_type", {"type": "string"}, "job type equals"),
    _query("q", {"type": "string"}, "name, run id or a tag contains (any case)"),
    _query("config_key", {"type": "string", "maxLength": 512}, "has this (flattened) config key"),
    _query("config_value", {"type": "string"}, "its value: text contains, or =x, >x, <x, >=x, <=x"),
]
_RUN_PAGE = [
    *_RUN_FILTERS,
    _query(
        "sort",
        {
            "anyOf": [
                {
                    "type": "string",
                    "enum": [
                        "started_at",
                        "finished_at",
                        "updated_at",
                        "name",
                        "project",
                        "status",
                        "last_step",
                        "duration",
                        "run_id",
                        "tags",
                    ],
                },
                {"type": "string", "pattern": "^(config|summary):."},
            ]
        },
        "a column, or config:KEY / summary:KEY",
    ),
    _query("order", {"type": "string", "enum": ["asc", "desc"]}, "sort order"),
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "page size"),
    _query("offset", {"type": "integer", "minimum": 0}, "rows to skip (next_offset)"),
]
_RUNS_PAGE_REQUIRED = ["runs", "total", "limit", "offset", "next_offset"]
_X_RANGE = [
    _query(name, {"type": "number"}, f"only points with x {side} this (a zoomed chart)")
    for name, side in (("x_min", "at or above"), ("x_max", "at or below"))
]


def _get(
    summary: str, ok: dict[str, Any], parameters: list[dict[str, Any]], *codes: int
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters,
            "responses": {"200": ok, **_errors(*_COMMON, *codes)},
        }
    }


_KEY = {
    "name": "key",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 512},
    "description": "the logged key (may hold slashes)",
}
_STEP = _query("step", {"type": "integer", "minimum": 0}, "one step (default: every step)")
_SHA256 = {
    "name": "sha256",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    "description": "the blob's SHA-256, 64 lowercase hex digits",
}
_BINARY = {"type": "string", "format": "binary"}
# What GET /blobs answers with: the inert formats, else a download (waddle.web.blobs).
_BLOB_TYPES = (
    "application/octet-stream",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "audio/wav",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
    "video/webm",
    "application/json",
)
_MEDIA_VALUE = {
    "type": "object",
    "required": ["step", "idx", "kind", "sha256", "size", "format"],
    "properties": {
        "step": {"type": "integer"},
        "idx": {"type": "integer", "description": "position in a list of images"},
        "kind": {"type": "string", "enum": ["image", "audio", "video", "table"]},
        "sha256": {"type": "string"},
        "size": {"type": "integer"},
        "format": {"type": "string"},
        "width": {"type": ["integer", "null"]},
        "height": {"type": ["integer", "null"]},
        "caption": {"type": ["string", "null"]},
    },
}
_BLOB_PATHS = {
    "get": {
        "summary": "The bytes of a blob (nosniff, a sandboxing CSP; active formats download)",
        "parameters": [_SHA256],
        "responses": {
            "200": {
                "description": "the bytes; ETag is the sha256, cacheable forever",
                "content": {media: {"schema": _BINARY} for media in _BLOB_TYPES},
            },
            "304": {"description": "not modified (If-None-Match)"},
            **_errors(400, 401, 403, 404),
        },
    },
    "head": {
        "summary": "Whether this host has a blob (the relay asks before it uploads)",
        "parameters": [_SHA256],
        "responses": {
            "200": {"description": "the host has it"},
            "304": {"description": "not modified (If-None-Match)"},
            "400": {"description": "not a sha256"},
            "401": {"description": "the token is missing or wrong"},
            "403": {"description": "a Host this server does not answer"},
            "404": {"description": "no such blob"},
        },
    },
    "put": {
        "summary": "Store a blob; its bytes must hash to its name (idempotent)",
        "parameters": [_SHA256],
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": _BINARY}},
        },
        "responses": {
            "200": _json({"type": "object", "required": ["sha256"]}, "the host had it already"),
            "201": _json({"type": "object", "required": ["sha256", "size"]}, "stored"),
            **_errors(400, 401, 403, 404, 413, 503),
        },
    },
}


def _media_paths() -> dict[str, Any]:
    """The /api endpoints of a run's media and artifacts (waddle.web.media_api)."""
    return {
        "/api/runs/{run_id}/media": _get(
            "The media keys of a run (histograms as kind histogram)",
            _json(
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["key", "kind", "steps", "last_step"],
                        "properties": {
                            "key": {"type": "string"},
                            "kind": {"type": "string"},
                            "steps": {"type": "integer"},
                            "last_step": {"type": "integer"},
                        },
                    },
                }
            ),
            [_RUN_ID],
            404,
        ),
        "/api/runs/{run_id}/media/{key}": _get(
            "The media values of one key, ordered by step and list position",
            _json({"type": "array", "items": _MEDIA_VALUE}),
            [_RUN_ID, _KEY, _STEP],
            404,
        ),
        "/api/runs/{run_id}/histograms/{key}": _get(
            "The histograms of one key, ordered by step",
            _json(
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["step", "bins", "counts"],
                        "properties": {
                            "step": {"type": "integer"},
                            "bins": {"type": "array", "items": {"type": "number"}},
                            "counts": {"type": "array", "items": {"type": "integer"}},
                        },
                    },
                }
            ),
            [_RUN_ID, _KEY],
            404,
        ),
        "/api/runs/{run_id}/tables/{key}": _get(
            "One page of a logged table, filtered and sorted by the server",
            _json(
                {
                    "type": "object",
                    "required": ["columns", "rows", "total", "step"],
                    "properties": {
                        "columns": {"type": "array", "items": {"type": "string"}},
                        "rows": {"type": "array", "items": {"type": "array"}},
                        "total": {"type": "integer", "description": "rows that match q"},
                        "step": {"type": "integer"},
                    },
                }
            ),
            [
                _RUN_ID,
                _KEY,
                _query("step", {"type": "integer", "minimum": 0}, "the step (default: latest)"),
                _query("offset", {"type": "integer", "minimum": 0}, "rows to skip"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "page size"),
                _query("sort", {"type": "string"}, "a column to sort by"),
                _query("desc", {"type": "string", "enum": ["true", "false"]}, "descending"),
                _query("q", {"type": "string"}, "only rows with a cell containing this"),
            ],
            404,
            413,
        ),
        "/api/runs/{run_id}/artifacts": _get(
            "A run's saved files, the artifact versions it logged and those it used",
            _json({"type": "object", "required": ["files", "logged", "used"]}),
            [_RUN_ID],
            404,
        ),
        "/api/artifacts/{name}": _get(
            "Every version of an artifact: the run that logged it, the runs that used it",
            _json({"type": "object", "required": ["name", "type", "versions"]}),
            [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 512},
                }
            ],
            404,
        ),
        "/blobs/{sha256}": _BLOB_PATHS,
    }


def spec() -> dict[str, Any]:
    """The whole document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Waddle",
            "version": "1",
            "description": "Offline-first experiment tracking. The WebSocket protocol "
            "(/ws) is described in docs/api.md.",
        },
        "components": {
            "schemas": {"Error": _ERROR, "Run": _RUN, "Series": _SERIES},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": {
            "/ingest": {
                "post": {
                    "summary": "Append events of one stream to this host's log",
                    "parameters": [
                        {"name": "stream", "in": "query", "required": True, "schema": _ID},
                        _GZIP,
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"type": "object"},
                                        {"type": "array", "items": {"type": "object"}},
                                    ]
                                }
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["stream", "seq", "written", "duplicates"],
                                "properties": {
                                    "stream": _ID,
                                    "seq": {"type": "integer", "description": "highest seq held"},
                                    "written": {"type": "integer"},
                                    "duplicates": {"type": "integer"},
                                },
                            }
                        ),
                        **_errors(*_COMMON, 409, 413, 415),
                    },
                }
            },
            "/ingest/batch": _INGEST_BATCH,
            "/info": _get(
                "The projects this host holds, and how many events its store quarantined",
                _json(
                    {
                        "type": "object",
                        "required": ["projects", "quarantined"],
                        "properties": {
                            "projects": {"type": "array"},
                            "quarantined": {"type": "integer", "minimum": 0},
                        },
                    }
                ),
                [],
            ),
            "/runs": _get(
                "Runs with their start times, newest first, a page at a time",
                _json(
                    {
                        "type": "object",
                        "required": _RUNS_PAGE_REQUIRED,
                        "properties": {
                            "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}
                        },
                    }
                ),
                _RUN_PAGE,
            ),
            "/run/{run_id}": _get(
                "One run (config, summary, context, status) and a page of its events",
                _json(
                    {
                        "type": "object",
                        "required": ["run", "stream", "events", "next_after", "more"],
                    }
                ),
                [
                    _RUN_ID,
                    _query("stream", _ID, "a stream of the run (default: the run id, rank 0)"),
                    _query("after", {"type": "integer", "minimum": -1}, "events after this seq"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "page size"
                    ),
                ],
                404,
            ),
            "/api/runs": _get(
                "Runs, filtered and sorted, a page at a time",
                _json({"type": "object", "required": _RUNS_PAGE_REQUIRED}),
                _RUN_PAGE,
            ),
            "/api/facets": _get(
                "The tags, config keys and summary keys of the runs a filter keeps",
                _json({"type": "object", "required": ["total", "tags", "config", "summary"]}),
                _RUN_FILTERS,
            ),
            "/api/runs/{run_id}": _get(
                "One run with its streams",
                _json({"$ref": "#/components/schemas/Run"}),
                [_RUN_ID],
                404,
            ),
            "/api/runs/{run_id}/keys": _get(
                "The metric and system keys of a run",
                _json({"type": "object", "required": ["run_id", "metrics", "system"]}),
                [_RUN_ID],
                404,
            ),
            "/api/runs/{run_id}/metrics": _get(
                "Metric series, downsampled on the server",
                _json({"$ref": "#/components/schemas/Series"}),
                [
                    _RUN_ID,
                    _KEYS,
                    _query("key", {"type": "string"}, "one key (repeatable; for keys with commas)"),
                    _query("x", {"type": "string", "enum": ["step", "ts"]}, "x axis"),
                    _query(
                        "x_metric",
                        {"type": "string", "maxLength": 512},
                        "another metric of the run as x axis (joined on step; overrides x)",
                    ),
                    _MAX_POINTS,
                    *_X_RANGE,
                ],
                404,
            ),
            "/api/runs/{run_id}/system": _get(
                "System-metric series (x is ts), downsampled on the server",
                _json({"$ref": "#/components/schemas/Series"}),
                [
                    _RUN_ID,
                    _KEYS,
                    _query("rank", {"type": "integer", "minimum": 0}, "one process"),
                    _MAX_POINTS,
                    *_X_RANGE,
                ],
                404,
            ),
            "/api/runs/{run_id}/console": _get(
                "Console lines of one process of a run",
                _json({"type": "object", "required": ["run_id", "rank", "lines", "next_after"]}),
                [
                    _RUN_ID,
                    _query("rank", {"type": "integer", "minimum": 0}, "the process (default 0)"),
                    _query("after", {"type": "integer", "minimum": -1}, "lines after this seq"),
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "page size"
                    ),
                ],
                404,
            ),
            **_media_paths(),
        },
    }

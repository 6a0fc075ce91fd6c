"""``POST /ingest/batch``: the events of several streams in one request (docs/api.md).

What a relay that tails many runs sends, so that a machine costs the host one request
per interval instead of one per run. The body is NDJSON, a sequence of parts: a header
line ``{"stream": "ID", "events": N}`` (exactly those two keys) and then exactly N event
lines of that stream. A body that does not frame is refused whole (400 ``invalid_body``
naming the line); so is one over the size limit (413). Otherwise each part is checked and
written as ``POST /ingest?stream=ID`` would check and write it (``check_lines`` and
``IngestLog.append_parts``: one path for both endpoints), and answered on its own: a
part's refusal never stops another part's write. Line numbers count every line of the
body, blank ones included.

Framing is pure: bytes in, parts or a ``RequestError`` out.
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import compress, count, repeat
from operator import itemgetter
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from waddle.errors import IngestError, StreamLockedError
from waddle.eventlog import collector
from waddle.eventlog.record import loads_lines
from waddle.ids import ID_RULE, is_valid_id
from waddle.web.errors import RequestError, bad_request, domain_answer, json_response
from waddle.web.ingest import (
    NDJSON_TYPES,
    check_lines,
    inflate,
    media_type,
    numbered_lines,
    read_body,
)
from waddle.web.ingest_log import IngestLog, Outcome, Part

_HEADER_KEYS = frozenset({"stream", "events"})


@dataclass(frozen=True, slots=True)
class Framed:
    """One part of a batch body: its stream, its event lines (numbered) and their values
    (``None`` where a line is not JSON)."""

    stream: str
    lines: list[tuple[int, bytes]]
    values: list[Any]


def frame(body: bytes) -> list[Framed]:
    """The parts of a batch body, or a 400 ``invalid_body`` naming the line at fault."""
    numbered = numbered_lines(body)
    lines = list(map(itemgetter(1), numbered))
    values = _values(lines)
    heads = _headers(values)
    parts: list[Framed] = []
    seen: set[str] = set()
    at = 0
    while at < len(numbered):
        line = numbered[at][0]
        stream, count = _header(values[at], line)
        if stream in seen:
            raise _unframed(line, f"stream {stream!r} has a part already: one part per stream")
        end = at + 1 + count
        inner = heads[bisect_right(heads, at) : bisect_left(heads, end)]
        if end > len(numbered) or inner:
            found = (inner[0] if inner else len(numbered)) - at - 1
            raise _unframed(line, f"the part announces {count} events and {found} lines follow")
        seen.add(stream)
        parts.append(Framed(stream, numbered[at + 1 : end], values[at + 1 : end]))
        at = end
    if not parts:
        raise _unframed(1, "the body holds no part: send a header line and its events")
    return parts


def _headers(values: list[Any]) -> list[int]:
    """Where the header lines are: objects of two keys (an event has at least three),
    found in C-level passes when every line is an object (the usual body)."""
    if set(map(type, values)) == {dict}:
        pairs = compress(count(), map(operator.eq, map(len, values), repeat(2)))
        return [at for at in pairs if _is_header(values[at])]
    return [at for at, value in enumerate(values) if _is_header(value)]


def _values(lines: list[bytes]) -> list[Any]:
    """Every line parsed, in one pass when all are JSON (the usual body)."""
    values = loads_lines(lines)
    return values if values is not None else [_parsed(line) for line in lines]


def _parsed(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _is_header(value: Any) -> bool:
    return type(value) is dict and value.keys() == _HEADER_KEYS


def _header(value: Any, line: int) -> tuple[str, int]:
    """The stream and event count of a header line, or a 400."""
    if not _is_header(value):
        raise _unframed(line, 'expected a part header {"stream": "ID", "events": N}')
    stream, count = value["stream"], value["events"]
    if type(stream) is not str or not is_valid_id(stream):
        raise _unframed(line, f"invalid stream id {str(stream)[:200]!r}: {ID_RULE}")
    if type(count) is not int or count < 1:
        raise _unframed(line, f"events must be a whole number of at least 1, not {count!r}")
    return stream, count


def _unframed(line: int, detail: str) -> RequestError:
    return bad_request("invalid_body", detail, line=line)


def take_batch(log: IngestLog, body: bytes, encoding: str, limit: int) -> dict[str, Any]:
    """Frame, check and write a batch; the answer of each part, in the body's order."""
    with collector.paused():
        parts = frame(inflate(body, encoding, limit))
        answers: list[dict[str, Any] | None] = []
        checked: list[Part] = []
        for part in parts:
            try:
                events, lines = check_lines(part.stream, part.lines, part.values)
            except RequestError as exc:
                answers.append(_refusal(part.stream, exc))
                continue
            answers.append(None)
            checked.append((part.stream, events, lines))
        del parts
        results = iter(log.append_parts(checked))
        del checked
    return {"streams": [answer or _answer(next(results)) for answer in answers]}


def _answer(result: Outcome | IngestError | StreamLockedError) -> dict[str, Any]:
    if isinstance(result, Outcome):
        return {"stream": result.stream, "status": 200, **result.to_json()}
    return _refusal(result.stream, domain_answer(result))


def _refusal(stream: str, error: RequestError) -> dict[str, Any]:
    """A refused part: its stream, status and error code, and that error's fields."""
    return {
        "stream": stream,
        "status": error.status,
        "error": error.error,
        "message": error.detail,
        **error.extra,
    }


async def ingest_batch(request: Request) -> Response:
    kind = media_type(request)
    if kind not in NDJSON_TYPES:
        raise RequestError(
            415, "unsupported_media_type", f"send Content-Type application/x-ndjson, not {kind!r}"
        )
    limit = request.app.state.settings.max_body_bytes
    body = await read_body(request, limit)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    log: IngestLog = request.app.state.ingest_log
    return json_response(await run_in_threadpool(take_batch, log, body, encoding, limit))

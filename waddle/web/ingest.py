"""``POST /ingest?stream=ID``: events from relays and other producers into this host's log.

The body is one JSON event, a JSON list of events (``Content-Type: application/json``),
or NDJSON (``application/x-ndjson``), all of one stream. Everything is checked before
anything is written: UTF-8, JSON, each event against the event models
(``waddle.events``; the frequent types against ``check_event``, which is as strict for
them), the nesting limit of the log (``MAX_DEPTH``: a deeper event is refused, so no
reader ever meets it), the ``run`` event against the stream id, and seqs rising by one.
Integers are bounded by the columns that store them, so what is accepted can be stored. The
first problem is answered with a 400 naming the line (for a JSON list: the event's
1-based position) and the field; nothing of that request reaches the log. Other content
types get 415 (a browser form or a ``text/plain`` post from another site cannot write
here), bodies over the limit 413 (compressed or inflated: ``Content-Encoding: gzip`` is
taken, as relays send it). Writing and idempotency are ``IngestLog``'s.

The parsing and checking functions are pure: bytes in, events or a ``RequestError`` out.
"""

from __future__ import annotations

import zlib
from itertools import count
from operator import itemgetter
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from waddle.event_types import Event
from waddle.eventlog import collector
from waddle.eventlog.record import (
    all_sound,
    check_event,
    deep_field,
    loads_lines,
    shallow,
    too_deep,
)
from waddle.events import EVENT_ADAPTER
from waddle.ids import ID_RULE, is_valid_id, stream_id
from waddle.limits import MAX_DEPTH
from waddle.web.errors import RequestError, bad_request, json_response
from waddle.web.ingest_log import IngestLog, Outcome

JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
# The bulk of the traffic: for these types ``check_event`` is as strict as the models
# (tests/test_events.py holds it so) and a tenth of the cost. A rejected event still goes
# through its model, whose message names the field.
CHECKED_ALONE = frozenset({"metrics", "system", "console"})
_SEQ = itemgetter("seq")


def check_stream(value: str | None) -> str:
    """The ``?stream=`` id, or a 400 before any file is touched."""
    if value is None:
        raise bad_request("missing_stream", "give the stream id as ?stream=ID", field="stream")
    if not is_valid_id(value):
        raise bad_request(
            "invalid_stream",
            f"invalid stream id {value[:200]!r}: {ID_RULE}",
            field="stream",
        )
    return value


def parse_body(body: bytes) -> list[tuple[int, Any]]:
    """(1-based position, value) of the events of a JSON body: one event or a list."""
    _check_utf8(body, 1)
    value = _loads(body, None)
    if type(value) is dict:
        return [(1, value)]
    if type(value) is list:
        return list(enumerate(value, 1))
    raise bad_request("invalid_body", "the body must be a JSON object (one event) or a list")


def numbered_lines(body: bytes) -> list[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines of an NDJSON body."""
    lines = body.split(b"\n")
    if not lines[-1]:
        lines.pop()  # after the final newline
    if all(map(bytes.strip, lines)):  # the usual body: pairs made in C
        return list(zip(count(1), lines))
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def check_lines(
    stream: str,
    numbered: list[tuple[int, bytes]],
    values: list[Any] | None = None,
    text: bytes | None = None,
) -> tuple[list[Event], list[bytes]]:
    """The checked events of one stream's NDJSON lines, and the lines themselves.

    ``values``: the lines already parsed (``None`` where a line is not JSON), when the
    caller has them; ``text``: bytes that hold every line (for the depth bound). Sound
    metrics, system and console events with consecutive seqs (a relay's usual request) are
    checked in whole-list passes; anything else line by line, the first problem a 400
    naming its line.
    """
    lines = [line for _, line in numbered]
    if values is None:
        values = loads_lines(lines)
    if values is not None and None not in values and _sound(values, lines, text):
        return values, lines
    items = []
    for (n, line), value in zip(numbered, values or [None] * len(lines), strict=True):
        if value is None:
            _check_utf8(line, n)
            value = _loads(line, n)
        items.append((n, value))
    return check_events(stream, items), lines


def _sound(values: list[Any], lines: list[bytes], text: bytes | None) -> bool:
    if not values or not all_sound(values):
        return False
    if not shallow(b"\n".join(lines) if text is None else text, lines, values):
        return False
    first = values[0]["seq"]
    return list(map(_SEQ, values)) == list(range(first, first + len(values)))


def _check_utf8(data: bytes, line: int) -> None:
    """A 400 naming the line of the first byte that is not UTF-8 (``data`` starts at
    ``line``)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(
            "invalid_encoding",
            f"the body is not UTF-8 (byte {exc.start})",
            line=line + data.count(b"\n", 0, exc.start),
        ) from None


def _loads(data: bytes, line: int | None) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        where = line if line is not None else exc.lineno
        raise bad_request("invalid_json", f"not valid JSON: {exc.msg}", line=where) from None


def check_events(stream: str, items: list[tuple[int, Any]]) -> list[Event]:
    """The events, each checked against its model; seqs must rise by one."""
    events = []
    previous: int | None = None
    for line, value in items:
        event = _check_event(stream, line, value)
        if previous is not None and event["seq"] != previous + 1:
            raise bad_request(
                "invalid_event",
                f"seq {event['seq']} follows {previous}: the events of a request must have "
                "consecutive seqs",
                line=line,
                field="seq",
            )
        previous = event["seq"]
        events.append(event)
    return events


def _check_event(stream: str, line: int, value: Any) -> Event:
    if type(value) is dict and too_deep(value):
        raise bad_request(
            "invalid_event",
            f"the event nests objects and arrays more than {MAX_DEPTH} levels deep (the event "
            "counts as one): no reader of the log takes it",
            line=line,
            field=".".join(deep_field(value)) or None,
        )
    if type(value) is dict and value.get("type") in CHECKED_ALONE and check_event(value) is None:
        return value  # type: ignore[return-value]  # as strict as its model (no cast: per line)
    try:
        EVENT_ADAPTER.validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        field = _field(error["loc"], error["type"])
        detail = f"{field}: {error['msg']}" if field else error["msg"]
        raise bad_request("invalid_event", detail, line=line, field=field) from None
    problem = check_event(value)
    if problem is not None:
        raise bad_request("invalid_event", problem, line=line)
    if value["type"] == "run":
        expected = stream_id(value["run_id"], value.get("rank", 0))
        if expected != stream:
            raise bad_request(
                "invalid_event",
                f"a run event for run {value['run_id']!r} rank {value.get('rank', 0)} belongs "
                f"to stream {expected!r}, not {stream!r}",
                line=line,
                field="run_id",
            )
    event: Event = value  # checked against its model above
    return event


def _field(loc: tuple[int | str, ...], kind: str) -> str | None:
    """``step`` of pydantic's ``('metrics', 'step')``; ``type`` for a bad discriminator."""
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        return "type"
    return ".".join(str(part) for part in loc[1:]) or None


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise bad_request("incomplete_body", "the client went away mid-body") from None
    return b"".join(chunks)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413, "too_large", f"request bodies are limited to {limit} bytes: send smaller batches"
    )


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or none), at most ``limit`` bytes.

    Inflating stops at the limit, so a small body that would expand without end (a gzip
    bomb) costs ``limit`` bytes of memory and gets a 413.
    """
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise RequestError(
            415, "unsupported_encoding", f"Content-Encoding {encoding!r}: send gzip or none"
        )
    out = bytearray()
    rest = body
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise bad_request("invalid_gzip", f"the body is not valid gzip ({exc})") from None
        if len(out) > limit or inflater.unconsumed_tail:
            raise _too_large(limit)
        if not inflater.eof:
            raise bad_request("invalid_gzip", "the gzip body ends early")
        rest = inflater.unused_data
    return bytes(out)


def _prepare(
    stream: str, body: bytes, encoding: str, limit: int, ndjson: bool
) -> tuple[list[Event], list[bytes] | None]:
    """The checked events of a request and, for NDJSON, their lines as received."""
    body = inflate(body, encoding, limit)
    if ndjson:
        return check_lines(stream, numbered_lines(body), text=body)
    return check_events(stream, parse_body(body)), None


async def ingest(request: Request) -> Response:
    stream = check_stream(request.query_params.get("stream"))
    kind = media_type(request)
    if kind not in JSON_TYPES and kind not in NDJSON_TYPES:
        raise RequestError(
            415,
            "unsupported_media_type",
            f"send Content-Type application/json or application/x-ndjson, not {kind!r}",
        )
    settings = request.app.state.settings
    body = await read_body(request, settings.max_body_bytes)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    limit = settings.max_body_bytes
    log: IngestLog = request.app.state.ingest_log
    outcome = await run_in_threadpool(
        _take, log, stream, body, encoding, limit, kind in NDJSON_TYPES
    )
    return json_response(outcome.to_json())


def _take(
    log: IngestLog, stream: str, body: bytes, encoding: str, limit: int, ndjson: bool
) -> Outcome:
    """Check and write a request in one go, the collector paused until its events are
    gone (``waddle.eventlog.collector``)."""
    with collector.paused():
        events, lines = _prepare(stream, body, encoding, limit, ndjson)
        outcome = log.append(stream, events, lines)
        del events, lines
    return outcome

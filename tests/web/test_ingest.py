"""``POST /ingest`` against a real server: what is accepted, what is refused, and that a
refused request leaves the log and the tables exactly as they were."""

from __future__ import annotations

import gzip
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import waddle
from tests.helpers import (
    raw_log,
)
from waddle.eventlog.reader import LogReader, Offset
from waddle.limits import MAX_DEPTH

from .conftest import Server, eventually, log_fingerprint, start_server, wait_for_run
from .events import finish_event, metrics_event, run_event, stream_events

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(
        tmp_path_factory.mktemp("ingest") / "root", "--max-body-bytes", str(LIMIT)
    )
    yield server
    assert server.stop() == 0, server.stderr()


def logged(root: Path, stream: str) -> list[dict[str, Any]]:
    reader = LogReader(root)
    offset, events = Offset(), []
    for _ in range(10_000):
        batch = reader.read(stream, offset)
        if batch.offset == offset:
            return events
        events += batch.events
        offset = batch.offset
    raise AssertionError("never reached the end of the stream")


def test_single_event_list_and_ndjson(server: Server) -> None:
    events = stream_events("ingestok", 6)
    reply = server.ingest("ingestok", events[0])
    assert reply.status == 200, reply.body
    assert reply.json() == {"stream": "ingestok", "seq": 0, "written": 1, "duplicates": 0}
    reply = server.ingest("ingestok", events[1:4])
    assert reply.json() == {"stream": "ingestok", "seq": 3, "written": 3, "duplicates": 0}
    reply = server.ingest("ingestok", events[4:], ndjson=True)
    assert reply.json() == {"stream": "ingestok", "seq": 7, "written": 4, "duplicates": 0}
    assert logged(server.root, "ingestok") == events
    run = wait_for_run(server, "ingestok")
    assert run["project"] == "relayed" and run["config"] == {"lr": 0.1}
    series = server.get_json("/api/runs/ingestok/metrics?keys=loss")["series"][0]
    assert series["x"] == [1, 2, 3, 4, 5, 6]


def test_gzip_bodies_are_taken(server: Server) -> None:
    events = stream_events("ingestgzip", 5)
    body = gzip.compress(b"".join(orjson.dumps(e) + b"\n" for e in events))
    parts = gzip.compress(orjson.dumps(events[:1])) + gzip.compress(b"")
    headers = {"Content-Encoding": "gzip"}
    assert server.ingest("ingestgzip", parts, headers=headers).json()["seq"] == 0
    reply = server.ingest("ingestgzip", body, ndjson=True, headers=headers)
    assert reply.status == 200 and reply.json()["seq"] == 6
    assert logged(server.root, "ingestgzip") == events


def test_ndjson_skips_blank_lines_and_accepts_crlf(server: Server) -> None:
    events = stream_events("ingestcrlf", 2, finish=False)
    body = b"\r\n".join(orjson.dumps(e) for e in events) + b"\r\n\r\n"
    reply = server.ingest("ingestcrlf", body, ndjson=True)
    assert reply.status == 200 and reply.json()["seq"] == 2


def test_ndjson_lines_are_written_as_received(server: Server) -> None:
    """Checked lines go to the log byte for byte: the host does not encode them again."""
    events = stream_events("ingestverbatim", 3, finish=False)  # a run event, 3 metrics
    lines = [orjson.dumps(e, option=orjson.OPT_INDENT_2).replace(b"\n", b" ") for e in events]
    body = b"\n".join(lines) + b"\n"
    for sent, written in ((lines[:1], 1), (lines[1:], 3), (lines, 0)):
        reply = server.ingest("ingestverbatim", b"\n".join(sent), ndjson=True)
        assert reply.json()["written"] == written, reply.body
    assert raw_log(server.root, "ingestverbatim") == body
    assert logged(server.root, "ingestverbatim") == events


def test_duplicates_are_acknowledged_not_written_again(server: Server) -> None:
    events = stream_events("ingestdup", 8, finish=False)
    assert server.ingest("ingestdup", events[:6]).json()["seq"] == 5
    reply = server.ingest("ingestdup", events[3:])
    assert reply.json() == {"stream": "ingestdup", "seq": 8, "written": 3, "duplicates": 3}
    reply = server.ingest("ingestdup", events)
    assert reply.json() == {"stream": "ingestdup", "seq": 8, "written": 0, "duplicates": 9}
    assert logged(server.root, "ingestdup") == events


def test_a_gap_is_refused_with_the_expected_seq(server: Server) -> None:
    events = stream_events("ingestgap", 8, finish=False)
    server.ingest("ingestgap", events[:3])
    before = log_fingerprint(server.root)
    reply = server.ingest("ingestgap", events[5:])
    assert reply.status == 409
    body = reply.json()
    assert (body["error"], body["expected"], body["seq"]) == ("seq_gap", 3, 2)
    assert log_fingerprint(server.root) == before
    assert server.ingest("ingestgap", events[3:]).json()["seq"] == 8


def test_an_empty_request_reports_the_highest_seq_and_creates_nothing(server: Server) -> None:
    assert server.ingest("ingestnothing", []).json()["seq"] == -1
    assert not (server.root / "log" / "ingestnothing").exists()
    server.ingest("ingestsome", stream_events("ingestsome", 2, finish=False))
    assert server.ingest("ingestsome", [], ndjson=True).json()["seq"] == 2


NEXT = 2  # the next seq of the "kept" stream the rejected requests aim at


def _ndjson(*lines: Any) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )


def _deep(levels: int, inner: bytes = b"1", opening: bytes = b"[", closing: bytes = b"]") -> bytes:
    """A metrics event for the kept stream whose ``deep`` value nests ``levels`` deep,
    as raw JSON (orjson itself refuses to write more than 254 levels)."""
    head = orjson.dumps({**metrics_event(NEXT), "data": {"ok": 1, "deep": 0}})
    return head.replace(b'"deep":0', b'"deep":' + opening * levels + inner + closing * levels)


def _artifact(size: int) -> dict[str, Any]:
    return {"seq": NEXT, "ts": 1.0, "type": "artifact", "name": "m", "kind": "model",
            "path": "m.pt", "size": size, "sha256": "0" * 64}  # fmt: skip


# Each was answered 200 and then killed the host's DuckDB writer (issue 10); now the
# request is refused, naming the field, and nothing is written.
POISON = {
    "exit code beyond int64": (
        orjson.dumps({**finish_event(NEXT), "exit_code": 2**64 - 1}),
        "application/json", 400, "invalid_event", 1, "exit_code",
    ),
    "artifact size beyond int64": (
        orjson.dumps(_artifact(2**63 + 5)),
        "application/json", 400, "invalid_event", 1, "size",
    ),
    "ndjson step beyond int64": (
        _ndjson(metrics_event(NEXT), metrics_event(NEXT + 1, 2**63)),
        "application/x-ndjson", 400, "invalid_event", 2, "step",
    ),
    "seq beyond int64": (
        orjson.dumps({**metrics_event(NEXT), "seq": 2**63}),
        "application/json", 400, "invalid_event", 1, "seq",
    ),
    "rank beyond int32": (
        orjson.dumps(run_event("ingestkept", seq=NEXT, rank=2**31)),
        "application/json", 400, "invalid_event", 1, "rank",
    ),
    "a value nested 300 lists deep": (
        _deep(300), "application/json", 400, "invalid_event", 1, "data.deep",
    ),
    "a value nested one level past the limit, in ndjson": (
        orjson.dumps(metrics_event(NEXT)) + b"\n" + _deep(MAX_DEPTH - 1).replace(
            b'"seq":%d' % NEXT, b'"seq":%d' % (NEXT + 1)
        ),
        "application/x-ndjson", 400, "invalid_event", 2, "data.deep",
    ),
    "990 dicts around NaN": (
        _deep(990, b'"NaN"', b'{"k":', b"}"),
        "application/x-ndjson", 400, "invalid_event", 1, "data.deep",
    ),
    "a body nested 300 deep": (
        b"[" * 300 + b"]" * 300, "application/json", 400, "invalid_event", 1, None,
    ),
    "a body nested 60,000 deep (under this server's body limit)": (
        b"[" * 60_000, "application/json", 400, "invalid_json", 1, None,
    ),
}  # fmt: skip

REJECTED = {
    **POISON,
    "invalid json": (b'{"seq": 2, "ts": 1.0,', "application/json", 400, "invalid_json", 1, None),
    "invalid json line": (
        _ndjson(metrics_event(NEXT), b"{not json}"),
        "application/x-ndjson",
        400,
        "invalid_json",
        2,
        None,
    ),
    "wrong type": (
        _ndjson(
            metrics_event(NEXT), metrics_event(NEXT + 1), {**metrics_event(NEXT + 2), "step": "x"}
        ),
        "application/x-ndjson",
        400,
        "invalid_event",
        3,
        "step",
    ),
    "negative step": (
        orjson.dumps([metrics_event(NEXT), {**metrics_event(NEXT + 1), "step": -1}]),
        "application/json",
        400,
        "invalid_event",
        2,
        "step",
    ),
    "missing field": (
        orjson.dumps({k: v for k, v in metrics_event(NEXT).items() if k != "data"}),
        "application/json",
        400,
        "invalid_event",
        1,
        "data",
    ),
    "missing type": (
        orjson.dumps({"seq": NEXT, "ts": 1.0}),
        "application/json",
        400,
        "invalid_event",
        1,
        "type",
    ),
    "unknown type": (
        orjson.dumps({"seq": NEXT, "ts": 1.0, "type": "gossip"}),
        "application/json",
        400,
        "invalid_event",
        1,
        "type",
    ),
    "bad finish status": (
        orjson.dumps(finish_event(NEXT, status="exploded")),
        "application/json",
        400,
        "invalid_event",
        1,
        "status",
    ),
    "non utf-8": (
        _ndjson(metrics_event(NEXT))
        + b'{"seq": 3, "ts": 1.0, "type": "metrics", "step": 3, "data": {"\xff": 1}}\n',
        "application/x-ndjson",
        400,
        "invalid_encoding",
        2,
        None,
    ),
    "not an object": (b"42", "application/json", 400, "invalid_body", None, None),
    "list of non-objects": (b"[1, 2]", "application/json", 400, "invalid_event", 1, None),
    "seqs not consecutive": (
        orjson.dumps([metrics_event(NEXT), metrics_event(NEXT + 2)]),
        "application/json",
        400,
        "invalid_event",
        2,
        "seq",
    ),
    # Sound-looking metrics in NDJSON take the whole-list check first; these must fall
    # back to the line-by-line one and be refused just the same.
    "ndjson seqs not consecutive": (
        orjson.dumps(metrics_event(NEXT)) + b"\n" + orjson.dumps(metrics_event(NEXT + 2)),
        "application/x-ndjson",
        400,
        "invalid_event",
        2,
        "seq",
    ),
    "ndjson negative step": (
        orjson.dumps(metrics_event(NEXT)) + b"\n" + orjson.dumps(metrics_event(NEXT + 1, -1)),
        "application/x-ndjson",
        400,
        "invalid_event",
        2,
        "step",
    ),
    "run event of another stream": (
        orjson.dumps(run_event("someoneelse", seq=NEXT)),
        "application/json",
        400,
        "invalid_event",
        1,
        "run_id",
    ),
    "valid then invalid": (
        orjson.dumps([metrics_event(NEXT), metrics_event(NEXT + 1), {"seq": NEXT + 2}]),
        "application/json",
        400,
        "invalid_event",
        3,
        "type",
    ),
    "text/plain": (
        orjson.dumps(metrics_event(NEXT)),
        "text/plain",
        415,
        "unsupported_media_type",
        None,
        None,
    ),
    "form": (
        b"a=b",
        "application/x-www-form-urlencoded",
        415,
        "unsupported_media_type",
        None,
        None,
    ),
    "gzip bomb": (
        gzip.compress(b"[" + b" " * (4 * LIMIT) + b"]"),
        "application/json",
        413,
        "too_large",
        None,
        None,
    ),
    "not gzip": (b"not gzip at all", "application/json", 400, "invalid_gzip", None, None),
    "truncated gzip": (
        gzip.compress(orjson.dumps(metrics_event(NEXT)))[:-10],
        "application/json",
        400,
        "invalid_gzip",
        None,
        None,
    ),
    "brotli": (b"\x0b\x02\x80{}\x03", "application/json", 415, "unsupported_encoding", None, None),
    "oversized": (
        orjson.dumps([metrics_event(NEXT, loss=1.0, blob="x" * LIMIT)]),
        "application/json",
        413,
        "too_large",
        None,
        None,
    ),
}


@pytest.fixture(scope="module")
def kept(server: Server) -> str:
    """A stream holding seqs 0 and 1, whose tables the rejected requests must not touch."""
    events = stream_events("ingestkept", NEXT - 1, finish=False)
    assert server.ingest("ingestkept", events).json()["seq"] == NEXT - 1
    wait_for_run(server, "ingestkept", status="running")
    eventually(lambda: server.get_json("/api/runs/ingestkept/metrics")["series"], what="metrics")
    return "ingestkept"


def tables(server: Server, stream: str) -> Any:
    return (
        server.get_json("/api/runs?limit=10000"),
        server.get_json(f"/run/{stream}"),
        server.get_json(f"/api/runs/{stream}/metrics"),
    )


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_requests_change_nothing(server: Server, kept: str, case: str) -> None:
    body, content_type, status, error, line, field = REJECTED[case]
    log_before, tables_before = log_fingerprint(server.root), tables(server, kept)
    headers = {"Content-Type": content_type}
    if "gzip" in case:
        headers["Content-Encoding"] = "gzip"
    elif case == "brotli":
        headers["Content-Encoding"] = "br"
    reply = server.ingest(kept, body, headers=headers)
    assert reply.status == status, reply.body
    answer = reply.json()
    assert answer["error"] == error and answer["detail"]
    assert answer.get("line") == line
    assert answer.get("field") == field
    time.sleep(0.3)  # several tail rounds: had anything been written, it would show now
    assert log_fingerprint(server.root) == log_before
    assert tables(server, kept) == tables_before
    assert server.ingest(kept, []).json()["seq"] == NEXT - 1


@pytest.mark.parametrize(
    "stream",
    ["../x", "..", ".", "", "a/b", "%2e%2e", "%2E%2E%2Fescape", "a%00b", "x" * 129, "-x", "a%20b"],
)
def test_path_like_stream_ids_touch_no_file(server: Server, stream: str) -> None:
    before = log_fingerprint(server.root)
    outside = sorted(p.name for p in server.root.parent.iterdir())
    reply = server.ingest(stream, stream_events("pathlike", 1))
    assert reply.status == 400, reply.body
    assert reply.json()["error"] in ("invalid_stream", "missing_stream")
    assert reply.json()["field"] == "stream"
    assert log_fingerprint(server.root) == before
    assert sorted(p.name for p in server.root.parent.iterdir()) == outside


def test_missing_stream_parameter(server: Server) -> None:
    reply = server.request(
        "POST", "/ingest", orjson.dumps(run_event("x")), {"Content-Type": "application/json"}
    )
    assert reply.status == 400 and reply.json()["error"] == "missing_stream"


def test_a_stream_written_locally_is_refused(server: Server) -> None:
    run = waddle.init(project="local", root=server.root, id="ingestlocal", system_metrics=False)
    try:
        reply = server.ingest("ingestlocal", [metrics_event(5)])
        assert reply.status == 409 and reply.json()["error"] == "stream_locked"
    finally:
        run.finish()


def test_the_token_is_required(serve: Any) -> None:
    server = serve(token="s3cret-token")
    events = stream_events("ingestauth", 1)
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}, {}):
        reply = server.request(
            "POST",
            "/ingest?stream=ingestauth",
            orjson.dumps(events),
            {"Content-Type": "application/json", **headers},
            auth=False,
        )
        assert reply.status == 401, headers
        assert reply.json()["error"] == "unauthorized"
        assert reply.headers.get("www-authenticate") == "Bearer"
        assert not (server.root / "log" / "ingestauth").exists()
    assert server.ingest("ingestauth", events).json()["seq"] == 2


def test_what_fits_the_widened_columns_is_taken_and_stored(server: Server) -> None:
    """``exit_code`` 2**40 (a BIGINT now) and a stream id whose numeric suffix is no
    rank (a run of its own): both were answered 200 and then killed the host's writer."""
    events = stream_events("ingestbig", 1, finish=False)
    events.append({**finish_event(2, status="failed"), "exit_code": 2**40})
    assert server.ingest("ingestbig", events).status == 200
    assert wait_for_run(server, "ingestbig", status="failed")["exit_code"] == 2**40
    lone = [metrics_event(seq) for seq in range(3)]
    assert server.ingest("x.99999999999", lone, ndjson=True).status == 200
    run = wait_for_run(server, "x.99999999999", status="running")
    assert run["last_step"] == 2
    assert server.get_json("/info")["quarantined"] == 0

"""``POST /ingest/batch`` against a real server: several streams in one request, each
part answered on its own, every rule of the single-stream ``/ingest`` kept per part."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import waddle
from tests.helpers import raw_events, raw_log
from waddle.web import ingest_log
from waddle.web.ingest_batch import take_batch
from waddle.web.ingest_log import IngestLog

from .conftest import Server, log_fingerprint, start_server, wait_for_run
from .events import metrics_event, run_event, stream_events
from .test_ingest_log import BrokenDisk, FailingWriter

LIMIT = 64 * 1024
NDJSON = {"Content-Type": "application/x-ndjson"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("batch") / "root", "--max-body-bytes", str(LIMIT))
    yield server
    assert server.stop() == 0, server.stderr()


def line(value: Any) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


def body_of(*parts: tuple[str, list[Any]]) -> bytes:
    """A batch body: for each (stream, events), its header line and its event lines."""
    lines = []
    for stream, events in parts:
        lines.append(orjson.dumps({"stream": stream, "events": len(events)}))
        lines += [line(event) for event in events]
    return b"\n".join(lines) + b"\n"


def post(server: Server, body: bytes, headers: dict[str, str] | None = None) -> Any:
    return server.request("POST", "/ingest/batch", body, {**NDJSON, **(headers or {})})


def logged(root: Path, stream: str) -> list[dict[str, Any]]:
    return raw_events(raw_log(root, stream))


def test_each_part_is_written_and_answered_in_order(server: Server) -> None:
    a, b, c = (stream_events(name, 3) for name in ("batcha", "batchb", "batchc"))
    assert server.ingest("batchb", b[:2]).status == 200
    reply = post(server, body_of(("batcha", a), ("batchb", b), ("batchc", c[:1])))
    assert reply.status == 200, reply.body
    assert reply.json() == {
        "streams": [
            {"stream": "batcha", "status": 200, "seq": 4, "written": 5, "duplicates": 0},
            {"stream": "batchb", "status": 200, "seq": 4, "written": 3, "duplicates": 2},
            {"stream": "batchc", "status": 200, "seq": 0, "written": 1, "duplicates": 0},
        ]
    }
    assert (logged(server.root, "batcha"), logged(server.root, "batchb")) == (a, b)
    assert logged(server.root, "batchc") == c[:1]
    assert wait_for_run(server, "batcha")["last_step"] == 3
    again = post(server, body_of(("batcha", a)))
    assert again.json()["streams"][0] == {
        "stream": "batcha", "status": 200, "seq": 4, "written": 0, "duplicates": 5,
    }  # fmt: skip
    assert logged(server.root, "batcha") == a


def test_a_refused_part_stops_no_other_part(server: Server) -> None:
    gap, bad, ok = (stream_events(n, 4, finish=False) for n in ("batchgap", "batchbad", "batchok"))
    server.ingest("batchgap", gap[:2])
    broken = {**metrics_event(2), "step": "x"}
    body = body_of(("batchgap", gap[3:]), ("batchbad", [*bad[:2], broken]), ("batchok", ok))
    before = log_fingerprint(server.root)
    reply = post(server, body)
    assert reply.status == 200, reply.body
    first, second, third = reply.json()["streams"]
    assert first["stream"] == "batchgap" and first["status"] == 409
    assert (first["error"], first["expected"], first["seq"]) == ("seq_gap", 2, 1)
    assert first["message"]
    assert second["stream"] == "batchbad" and second["status"] == 400
    # The broken event is line 7 of the body: header, 2 events, header, 2 events, it.
    assert (second["error"], second["line"], second["field"]) == ("invalid_event", 7, "step")
    assert third == {"stream": "batchok", "status": 200, "seq": 4, "written": 5, "duplicates": 0}
    after = log_fingerprint(server.root)
    assert {k: v for k, v in after.items() if not k.startswith("batchok")} == before
    assert logged(server.root, "batchgap") == gap[:2]
    assert not (server.root / "log" / "batchbad").exists()


def test_line_numbers_count_blank_lines_and_hostile_lines_stay_in_their_part(
    server: Server,
) -> None:
    ok = stream_events("batchblank", 1, finish=False)
    head = orjson.dumps({"stream": "batchutf", "events": 2})
    body = (
        body_of(("batchblank", ok))
        + b"\n\r\n"
        + head
        + b"\n"
        + orjson.dumps(run_event("batchutf"))
        + b'\n{"seq": 1, "ts": 1.0, "type": "metrics", "step": 1, "data": {"\xff": 1}}\n'
        + body_of(("batchtrunc", [run_event("batchtrunc"), b'{"seq": 1, "ts": 1.0, "ty']))
    )
    reply = post(server, body)
    assert reply.status == 200, reply.body
    first, second, third = reply.json()["streams"]
    assert first["status"] == 200 and first["seq"] == 1
    assert (second["status"], second["error"], second["line"]) == (400, "invalid_encoding", 8)
    assert (third["status"], third["error"], third["line"]) == (400, "invalid_json", 11)
    assert not (server.root / "log" / "batchutf").exists()
    assert not (server.root / "log" / "batchtrunc").exists()


def test_a_stream_written_locally_is_refused_in_its_part_only(server: Server) -> None:
    run = waddle.init(project="local", root=server.root, id="batchlocal", system_metrics=False)
    try:
        other = stream_events("batchnotlocal", 1, finish=False)
        reply = post(server, body_of(("batchlocal", [metrics_event(5)]), ("batchnotlocal", other)))
        locked, written = reply.json()["streams"]
        assert (locked["status"], locked["error"]) == (409, "stream_locked")
        assert written["status"] == 200 and written["written"] == 2
    finally:
        run.finish()


def test_the_same_stream_id_from_another_machine_is_a_conflict_in_its_part(
    server: Server,
) -> None:
    first = stream_events("batchclash", 1, finish=False)
    post(server, body_of(("batchclash", first)))
    other = [{**first[0], "context": {"host": "gpu-box-2", "pid": 7}}, first[1]]
    reply = post(server, body_of(("batchclash", other)))
    answer = reply.json()["streams"][0]
    assert (answer["status"], answer["error"], answer["stream"]) == (
        409,
        "stream_conflict",
        "batchclash",
    )
    assert logged(server.root, "batchclash") == first


def _header(stream: str, events: Any) -> bytes:
    return orjson.dumps({"stream": stream, "events": events})


EVENT = orjson.dumps(metrics_event(0))

# (body, the line the 400 names): none of these frames, so nothing of it is written.
UNFRAMED = {
    "no part at all": (b"", 1),
    "only blank lines": (b"\n\n  \n", 1),
    "a header that is not json": (b'{"stream": "batchf", "events": 1\n' + EVENT, 1),
    "a header that is an event": (EVENT + b"\n", 1),
    "a header that is a list": (b'["batchf", 1]\n' + EVENT, 1),
    "a header without events": (b'{"stream": "batchf"}\n' + EVENT, 1),
    "a header with more fields": (b'{"stream": "batchf", "events": 1, "x": 1}\n' + EVENT, 1),
    "zero events": (_header("batchf", 0) + b"\n", 1),
    "negative events": (_header("batchf", -1) + b"\n" + EVENT, 1),
    "events as a boolean": (_header("batchf", True) + b"\n" + EVENT, 1),
    "events as a string": (_header("batchf", "1") + b"\n" + EVENT, 1),
    "events beyond 64 bits": (b'{"stream": "batchf", "events": 1' + b"0" * 30 + b"}\n" + EVENT, 1),
    "a path as the stream": (_header("../escape", 1) + b"\n" + EVENT, 1),
    "a stream that is dots": (_header("..", 1) + b"\n" + EVENT, 1),
    "a stream that is a number": (b'{"stream": 7, "events": 1}\n' + EVENT, 1),
    "a header in non utf-8": (b'{"stream": "batch\xff", "events": 1}\n' + EVENT, 1),
    "fewer lines than announced": (_header("batchf", 3) + b"\n" + EVENT + b"\n" + EVENT, 1),
    "a part cut short by the next header": (
        _header("batchf", 2) + b"\n" + EVENT + b"\n" + _header("batchg", 1) + b"\n" + EVENT,
        1,
    ),
    "more lines than announced": (_header("batchf", 1) + b"\n" + EVENT + b"\n" + EVENT, 3),
    "a stream named twice": (
        _header("batchf", 1) + b"\n" + EVENT + b"\n\n" + _header("batchf", 1) + b"\n" + EVENT,
        4,
    ),
}


@pytest.mark.parametrize("case", sorted(UNFRAMED))
def test_a_body_that_does_not_frame_is_refused_whole(server: Server, case: str) -> None:
    body, where = UNFRAMED[case]
    before = log_fingerprint(server.root)
    reply = post(server, body)
    assert reply.status == 400, reply.body
    answer = reply.json()
    assert (answer["error"], answer["line"]) == ("invalid_body", where) and answer["detail"]
    assert log_fingerprint(server.root) == before


def test_a_good_part_before_a_framing_error_is_not_written(server: Server) -> None:
    good = body_of(("batchframe", stream_events("batchframe", 1)))
    before = log_fingerprint(server.root)
    reply = post(server, good + _header("batchframe2", 2) + b"\n" + EVENT)
    assert (reply.status, reply.json()["line"]) == (400, 5), reply.body
    assert log_fingerprint(server.root) == before


REFUSED_WHOLE = {
    "oversized": (
        body_of(("batchbig", [metrics_event(0, blob="x" * LIMIT)])),
        {},
        413,
        "too_large",
    ),
    "gzip bomb": (
        gzip.compress(b"\n" * (4 * LIMIT)),
        {"Content-Encoding": "gzip"},
        413,
        "too_large",
    ),
    "truncated gzip": (
        gzip.compress(body_of(("batchgz", stream_events("batchgz", 1))))[:-10],
        {"Content-Encoding": "gzip"},
        400,
        "invalid_gzip",
    ),
    "json": (b"[]", {"Content-Type": "application/json"}, 415, "unsupported_media_type"),
    "text/plain": (b"x", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_WHOLE))
def test_limits_and_content_types_refuse_the_whole_request(server: Server, case: str) -> None:
    body, headers, status, error = REFUSED_WHOLE[case]
    before = log_fingerprint(server.root)
    reply = post(server, body, headers)
    assert (reply.status, reply.json()["error"]) == (status, error), reply.body
    assert log_fingerprint(server.root) == before


def test_gzip_bodies_are_taken(server: Server) -> None:
    events = stream_events("batchgzipok", 2)
    reply = post(
        server, gzip.compress(body_of(("batchgzipok", events))), {"Content-Encoding": "gzip"}
    )
    assert reply.json()["streams"][0]["written"] == 4
    assert logged(server.root, "batchgzipok") == events


def test_the_token_is_required(serve: Any) -> None:
    server = serve(token="s3cret-token")
    body = body_of(("batchauth", stream_events("batchauth", 1)))
    reply = server.request("POST", "/ingest/batch", body, NDJSON, auth=False)
    assert reply.status == 401
    assert not (server.root / "log" / "batchauth").exists()
    assert server.request("POST", "/ingest/batch", body, NDJSON).status == 200


def test_a_failed_write_answers_503_in_its_part(tmp_path: Path) -> None:
    log = IngestLog(tmp_path)
    log._writers["full"] = FailingWriter(room=0)  # type: ignore[assignment]
    events = stream_events("fine", 1, finish=False)
    body = body_of(("full", [metrics_event(0)]), ("fine", events))
    full, fine = take_batch(log, body, "", LIMIT)["streams"]
    assert (full["status"], full["error"], full["seq"], full["stream"]) == (
        503,
        "write_failed",
        -1,
        "full",
    )
    assert fine == {"stream": "fine", "status": 200, "seq": 1, "written": 2, "duplicates": 0}
    log.close()
    assert logged(tmp_path, "fine") == events


def test_a_part_whose_fsync_failed_is_a_503_never_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_log, "_SYNCFS", lambda fd: -1)  # an error on that disk
    disk = BrokenDisk(monkeypatch, "unsynced")
    log = IngestLog(tmp_path)
    bad, good = stream_events("unsynced", 2, finish=False), stream_events("synced", 1)
    body = body_of(("unsynced", bad), ("synced", good))
    for _ in range(2):  # the relay's resend is not taken for written either
        failed, fine = take_batch(log, body, "", LIMIT)["streams"]
        assert (failed["status"], failed["error"], failed["seq"], failed["written"]) == (
            503,
            "write_failed",
            -1,
            0,
        )
        assert (fine["status"], fine["seq"]) == (200, 2)
    disk.failing.clear()  # a later fsync proves nothing: refused until a restart
    failed, _ = take_batch(log, body, "", LIMIT)["streams"]
    assert (failed["status"], failed["error"], failed["seq"]) == (503, "write_failed", -1)
    log.close()
    restarted = IngestLog(tmp_path)
    failed, _ = take_batch(restarted, body, "", LIMIT)["streams"]
    assert (failed["status"], failed["seq"], failed["duplicates"]) == (200, 2, 3)
    restarted.close()
    assert logged(tmp_path, "unsynced") == bad


FUZZED = {name: stream_events(name, 2) for name in ("batchfuzza", "batchfuzzb")}


# Hostile bodies built from a valid one: lines cut, dropped, doubled, swapped, garbled.
def _mangle(lines: list[bytes], edits: list[tuple[int, int, int]]) -> bytes:
    for kind, at, cut in edits:
        if not lines:
            break
        at %= len(lines)
        if kind == 0:
            lines[at] = lines[at][: cut % (len(lines[at]) + 1)]
        elif kind == 1:
            del lines[at]
        elif kind == 2:
            lines.insert(at, lines[at])
        elif kind == 3:
            lines[at], lines[-1] = lines[-1], lines[at]
        else:
            lines[at] = lines[at].replace(b'"', b"\xff", 1)
    return b"\n".join(lines)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 50), st.integers(0, 200)), max_size=4
    )
)
def test_hostile_bodies_never_write_a_refused_part(server: Server, edits: Any) -> None:
    names = sorted(FUZZED)
    valid = body_of(*FUZZED.items())
    before = {
        name: raw_log(server.root, name) for name in names if (server.root / "log" / name).exists()
    }
    reply = post(server, _mangle(valid.split(b"\n"), edits))
    assert reply.status in (200, 400), reply.body
    answers = reply.json().get("streams", []) if reply.status == 200 else []
    accepted = {a["stream"] for a in answers if a["status"] == 200}
    assert all(a["status"] in (200, 400, 409) for a in answers), answers
    for name in names:
        now = raw_log(server.root, name) if (server.root / "log" / name).exists() else b""
        if name not in accepted:
            assert now == before.get(name, b""), name
        else:
            assert raw_events(now) == FUZZED[name][: len(raw_events(now))]

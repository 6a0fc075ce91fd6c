"""The relay forwarder and its HTTP client, against a scripted loopback host (how each
answer is read) and against a real ``waddle serve`` (what arrives, exactly once)."""

from __future__ import annotations

import gzip
import io
import logging
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from tests.consumers.logs import mixed, open_stream, run_fields, write_run
from tests.consumers.relay.support import (
    WADDLE,
    central,
    checksums,
    clean_env,
    free_port,
    last_seqs,
    log_events,
    reference_db,
    relayed,
    stream_events,
)
from tests.helpers import eventually
from tests.web.conftest import Server, log_fingerprint, start_server
from waddle.cli import commands
from waddle.consumers.base import COMMIT_INTERVAL_S, run_consumer
from waddle.consumers.daemon import consume
from waddle.consumers.lag import last_seq
from waddle.consumers.registry import StateStore
from waddle.consumers.relay import consumer as consumer_module
from waddle.consumers.relay import parts
from waddle.consumers.relay.client import Backoff, Held, IngestClient, check_url
from waddle.consumers.relay.consumer import RelayConsumer, relay_name
from waddle.consumers.relay.sender import Sender
from waddle.errors import (
    HostBusy,
    HostDenied,
    HostRefused,
    HostUnreachable,
    PermanentError,
    UsageError,
    WaddleError,
)
from waddle.eventlog.reader import Batch, LogReader, Offset
from waddle.eventlog.record import encode
from waddle.eventlog.segment import list_segments, log_dir, segment_name

FAST = Backoff(base=0.02, cap=0.2)

Reply = tuple[int, dict[str, Any], dict[str, str]]


class FakeHost:
    """A loopback HTTP server that answers from ``respond`` and records every request."""

    def __init__(self, respond: Callable[[dict[str, Any]], Reply], drop: bool = False) -> None:
        self.respond = respond
        self.requests: list[dict[str, Any]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            # ``drop``: answer as HTTP/1.1 keep-alive, then close the connection unsaid,
            # as a host does to an idle client.
            protocol_version = "HTTP/1.1" if drop else "HTTP/1.0"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                gz = self.headers.get("Content-Encoding") == "gzip"
                request = {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "raw": raw,
                    "body": gzip.decompress(raw) if gz else raw,
                }
                host.requests.append(request)
                status, body, headers = host.respond(request)
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = drop

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_host() -> Iterator[Callable[..., FakeHost]]:
    hosts: list[FakeHost] = []

    def make(respond: Callable[[dict[str, Any]], Reply], drop: bool = False) -> FakeHost:
        hosts.append(FakeHost(respond, drop))
        return hosts[-1]

    yield make
    for host in hosts:
        host.close()


def held_all(request: dict[str, Any]) -> Reply:
    """A host that holds whatever it is sent, to ``/ingest`` and ``/ingest/batch``."""
    if request["path"].startswith("/ingest/batch"):
        return 200, {"streams": [held_part(p, events) for p, events in parts_of(request)]}, {}
    last = orjson.loads(request["body"].splitlines()[-1])["seq"]
    return 200, {"seq": last, "written": 0, "duplicates": 0}, {}


def held_part(stream: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"stream": stream, "status": 200, "seq": events[-1]["seq"], "written": len(events)}


def parts_of(request: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The parts of an ``/ingest/batch`` request, or its one stream's part of ``/ingest``."""
    values = [orjson.loads(line) for line in request["body"].splitlines()]
    if not request["path"].startswith("/ingest/batch"):
        return [(request["path"].split("stream=", 1)[1], values)]
    parts: list[tuple[str, list[dict[str, Any]]]] = []
    at = 0
    while at < len(values):
        header = values[at]
        assert set(header) == {"stream", "events"}, header
        parts.append((header["stream"], values[at + 1 : at + 1 + header["events"]]))
        at += 1 + header["events"]
    return parts


def sent_seqs(requests: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Every seq ``requests`` sent, per stream, in order."""
    sent: dict[str, list[int]] = {}
    for request in requests:
        for stream, events in parts_of(request):
            sent.setdefault(stream, []).extend(e["seq"] for e in events)
    return sent


# -- the client: one place that reads answers -----------------------------------------


def test_backoff_is_capped_exponential_with_jitter() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(1))
    for attempt in range(12):
        window = min(2.0, 0.1 * 2**attempt)
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(window / 2 <= d <= window for d in delays)
        assert len(set(delays)) > 100, "delays must be jittered"
    assert backoff.delay(3, hint=1.5) >= 1.5, "Retry-After is honoured"
    assert backoff.delay(3, hint=60) == 2.0, "but never beyond the cap"


def test_relay_names_are_per_host_and_port() -> None:
    names = {relay_name(u) for u in ("http://a:1", "http://a:2", "http://b:1", "https://a")}
    assert names == {"relay-a-1", "relay-a-2", "relay-b-1", "relay-a-443"}
    assert relay_name("http://[::1]:8080/") == "relay-_1-8080"
    assert relay_name("http://Central.Lab:80") == relay_name("http://central.lab")


@pytest.mark.parametrize("url", ["ftp://h:1", "h:1", "http://h:1/?x=1", "http://h:99999"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(UsageError):
        check_url(url)


ANSWERS: list[tuple[int, dict[str, Any], dict[str, str], Any]] = [
    (200, {"stream": "s", "seq": 5, "written": 6, "duplicates": 0}, {}, Held(5)),
    (409, {"error": "seq_gap", "expected": 3, "seq": 2}, {}, Held(2, gap=True)),
    (401, {"error": "unauthorized"}, {}, (HostDenied, "host", "token")),
    (403, {"error": "forbidden"}, {}, (HostDenied, "host", "token")),
    (404, {"error": "not_found"}, {}, (HostDenied, "host", "not a Waddle host")),
    (400, {"error": "invalid_event", "detail": "step: bad"}, {}, (HostDenied, "stream", "bad")),
    (409, {"error": "stream_locked", "detail": "one writer"}, {}, (HostDenied, "stream", "")),
    (413, {"error": "too_large"}, {}, (HostDenied, "stream", "413")),
    (500, {"error": "internal"}, {}, (HostBusy, None, "500")),
    (503, {"error": "write_failed"}, {"Retry-After": "7"}, (HostBusy, 7.0, "503")),
    (429, {}, {}, (HostBusy, None, "429")),
]


@pytest.mark.parametrize(("status", "body", "headers", "expected"), ANSWERS)
def test_every_answer_becomes_held_or_one_kind_of_error(
    fake_host: Callable[..., FakeHost],
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    expected: Any,
) -> None:
    host = fake_host(lambda request: (status, body, headers))
    client = IngestClient(host.url, "tok", compress=False)
    try:
        if isinstance(expected, Held):
            assert client.post("s", b'{"seq":0}\n') == expected
            return
        kind, extra, words = expected
        with pytest.raises(kind) as caught:
            client.post("s", b'{"seq":0}\n')
        assert words in str(caught.value)
        assert caught.value.status == status
        if kind is HostDenied:
            assert caught.value.scope == extra
        else:
            assert caught.value.retry_after == extra
    finally:
        client.close()


def test_an_unreachable_host_is_transient() -> None:
    client = IngestClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(HostUnreachable, match="connection refused"):
        client.post("s", b'{"seq":0}\n')


class HintedBackoff(Backoff):
    """Records the Retry-After hints it is given; waits next to nothing."""

    def __init__(self) -> None:
        super().__init__(base=0.001, cap=0.001)
        self.hints: list[float | None] = []

    def delay(self, attempt: int, hint: float | None = None) -> float:
        self.hints.append(hint)
        return 0.001


class QuietOwner:
    """A ``Sender``'s owner that only records what it is told."""

    def __init__(self) -> None:
        self.parked: dict[str, str] = {}
        self.failures: list[Exception] = []

    def stopping(self) -> bool:
        return bool(self.failures)

    def fail(self, exc: Exception) -> None:
        self.failures.append(exc)

    def park(self, stream: str, reason: str) -> None:
        self.parked[stream] = reason

    def defer(self, stream: str, exc: Exception) -> bool:
        return False  # waits on the stream in place, as ``waddle sync``'s relay does


def test_the_sender_waits_as_long_as_a_busy_host_asks(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    answers = iter([(503, {"error": "write_failed"}, {"Retry-After": "0"}), None])

    def busy_once(request: dict[str, Any]) -> Reply:
        return next(answers) or held_all(request)

    host = fake_host(busy_once)
    backoff, owner = HintedBackoff(), QuietOwner()
    sender = Sender(
        owner,
        tmp_path,
        host.url,
        None,
        timeout=5,
        compress=False,
        backoff=backoff,
        post_bytes=1 << 20,
        give_up_after=None,
        quiet=True,
        wake=threading.Event(),
    )
    try:
        assert sender.send("s", [{"seq": 0, "ts": 1.0, "type": "config", "config": {}}])
    finally:
        sender.close()
    assert backoff.hints == [0.0] and owner.failures == [] and owner.parked == {}


def test_a_connection_the_host_closed_while_idle_is_not_an_outage(
    fake_host: Callable[..., FakeHost],
) -> None:
    host = fake_host(held_all, drop=True)
    client = IngestClient(host.url)
    try:
        for seq in range(3):
            assert client.post("s", encode({"seq": seq})) == Held(seq)
    finally:
        client.close()
    assert len(host.requests) == 3


def test_posts_gzip_ndjson_with_the_bearer_token(fake_host: Callable[..., FakeHost]) -> None:
    host = fake_host(held_all)
    events = [
        {"seq": i, "ts": 1.0, "type": "metrics", "step": i, "data": {"x": i}} for i in range(3)
    ]
    body = b"".join(encode(e) for e in events)
    client = IngestClient(host.url + "/", "s3cret")
    assert client.post("run.1", body) == Held(2)
    client.close()
    (request,) = host.requests
    assert request["path"] == "/ingest?stream=run.1"
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert request["headers"]["Content-Type"] == "application/x-ndjson"
    assert request["headers"]["Content-Encoding"] == "gzip"
    assert request["body"] == body and len(request["raw"]) < len(body)


def test_a_host_without_gzip_gets_plain_bodies(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def no_gzip(request: dict[str, Any]) -> Reply:
        if request["headers"].get("Content-Encoding") == "gzip":
            return 400, {"error": "invalid_encoding", "detail": "not UTF-8"}, {}
        return held_all(request)

    host = fake_host(no_gzip)
    root = tmp_path / "w"
    for run in ("a", "b", "c"):
        write_run(root, run, 30)
    relay = RelayConsumer(root, host.url, backoff=FAST)
    run_consumer(relay, root, threading.Event(), once=True)
    assert relayed(root, host.url) == last_seqs(root)
    gzipped = [r for r in host.requests if "Content-Encoding" in r["headers"]]
    assert 1 <= len(gzipped) <= relay.senders, "gzip is given up after the first refusal"
    warnings = [r for r in caplog.records if "gzip" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("setting", [None, "1", "0"])
def test_bodies_are_gzip_unless_waddle_relay_gzip_is_0(
    fake_host: Callable[..., FakeHost],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
) -> None:
    """Gzip by default, to a loopback URL too (an ssh tunnel or a port-forward presents a
    remote host as localhost); plain only when told (a host on this machine)."""
    if setting is None:
        monkeypatch.delenv("WADDLE_RELAY_GZIP", raising=False)
    else:
        monkeypatch.setenv("WADDLE_RELAY_GZIP", setting)
    host = fake_host(held_all)
    root = tmp_path / "w"
    write_run(root, "a", 30)
    relay = RelayConsumer(root, host.url, backoff=FAST)
    run_consumer(relay, root, threading.Event(), once=True)
    assert relayed(root, host.url) == last_seqs(root)
    encodings = {r["headers"].get("Content-Encoding") for r in host.requests}
    assert encodings == ({None} if setting == "0" else {"gzip"})


# -- refusals and outages --------------------------------------------------------------


def test_a_wrong_token_stops_forwarding_once_keeps_everything_and_does_not_spin(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host = fake_host(lambda request: (401, {"error": "unauthorized"}, {}))
    root = tmp_path / "w"
    write_run(root, "a", 50)
    write_run(root, "b", 50)
    stop = threading.Event()
    relay = RelayConsumer(root, host.url, token="wrong", stop=stop, backoff=FAST)
    thread = threading.Thread(target=run_consumer, args=(relay, root, stop), daemon=True)
    thread.start()
    eventually(lambda: relay.failure is not None, 10, "the refusal")
    write_run(root, "c", 50)  # more events arrive: still nothing is sent
    time.sleep(0.5)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert len(host.requests) <= 2, "one refused request per stream in flight, then none"
    assert isinstance(relay.failure, PermanentError)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "token" in errors[0].getMessage()
    assert relayed(root, host.url) == {}, "nothing past what the host acknowledged"


def test_retries_while_the_host_is_down_then_delivers(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "early", 500, payload=mixed, segment_bytes=8192)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    relay = RelayConsumer(root, url, stop=stop, backoff=FAST)
    thread = threading.Thread(
        target=run_consumer, args=(relay, root, stop), kwargs={"interval": 0.02}, daemon=True
    )
    thread.start()
    time.sleep(0.6)  # several refused connections
    assert relayed(root, url) == {}
    server = central(tmp_path / "central", port)
    try:
        eventually(lambda: relayed(root, url) == last_seqs(root), 20, "delivery after outage")
        assert log_events(server.root) == log_events(root)
        server.stop()
        write_run(root, "late", 40)  # the host is away again: the relay waits it out
        time.sleep(0.4)
        began = time.monotonic()
        stop.set()
        thread.join(10)
        assert time.monotonic() - began < 2, "a stop ends the wait for the host promptly"
        assert "late" not in relayed(root, url), "nothing unacknowledged is committed"
    finally:
        stop.set()
        server.stop()


# -- against a real waddle serve ---------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Server]:
    server = central(tmp_path / "central", free_port())
    yield server
    assert server.stop() == 0, server.stderr()


def relay_once(root: Path, url: str, **options: Any) -> RelayConsumer:
    relay = RelayConsumer(root, url, backoff=FAST, **options)
    run_consumer(relay, root, threading.Event(), once=True)
    return relay


def test_every_stream_arrives_exactly_and_lag_shows_zero(host: Server, tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "alpha", 400, payload=mixed, segment_bytes=4096)
    write_run(root, "alpha", 100, payload=mixed, rank=1, segment_bytes=4096)
    write_run(root, "beta", 300, segment_bytes=2048, finish="failed")
    relay = relay_once(root, host.url)
    assert relay.failure is None and relay.parked == {}
    assert log_events(host.root) == log_events(root)
    assert relayed(root, host.url) == last_seqs(root)
    out = io.StringIO()
    commands.consumers(root, out)
    report = out.getvalue()
    assert relay_name(host.url) in report
    section = report.split(relay_name(host.url), 1)[1]
    assert "alpha.1" in section and all(
        line.split()[1:] == ["0", "0"] for line in section.splitlines()[2:] if line.strip()
    )


def test_a_replay_from_lost_offsets_writes_nothing_twice(host: Server, tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "gamma", 300, segment_bytes=4096)
    relay_once(root, host.url)
    before = log_fingerprint(host.root)
    StateStore(root).remove(relay_name(host.url))
    relay_once(root, host.url)
    assert log_fingerprint(host.root) == before
    assert relayed(root, host.url) == last_seqs(root)


def test_a_host_that_lost_events_gets_them_again_from_the_seq_it_expects(
    tmp_path: Path,
) -> None:
    root = tmp_path / "w"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    writer = open_stream(root, "delta", segment_bytes=4096)
    writer.append("run", {"run_id": "delta", "project": "p", "name": "d", "config": {},
                          "tags": [], "notes": None, "group": None, "job_type": None,
                          "context": {}})  # fmt: skip
    for step in range(200):
        writer.append("metrics", {"step": step, "data": {"loss": step}})
    first = central(tmp_path / "first", port)
    relay_once(root, url)
    first.stop()
    replacement = central(tmp_path / "replacement", port)  # an empty host, same address
    try:
        for step in range(200, 300):
            writer.append("metrics", {"step": step, "data": {"loss": step}})
        writer.close()
        relay = relay_once(root, url)
        assert relay.parked == {}
        assert stream_events(replacement.root, "delta") == stream_events(root, "delta")
    finally:
        replacement.stop()


def corrupt_lines(root: Path, stream: str, *numbers: int) -> None:
    """Overwrite lines ``numbers`` (seqs, in a one-segment stream) with broken JSON."""
    segment = log_dir(root) / stream / segment_name(list_segments(log_dir(root) / stream)[0])
    lines = segment.read_bytes().splitlines(keepends=True)
    for number in numbers:
        lines[number] = b'{"seq": %d, "this line is corrupt\n' % number
    segment.write_bytes(b"".join(lines))


def test_a_corrupt_line_is_relayed_as_skipped_and_the_events_after_it_arrive(
    host: Server, tmp_path: Path
) -> None:
    root = tmp_path / "w"
    write_run(root, "holed", 50)
    write_run(root, "whole", 50)
    corrupt_lines(root, "holed", 20)
    relay = relay_once(root, host.url)
    assert relay.parked == {} and relayed(root, host.url) == last_seqs(root)
    held = stream_events(host.root, "holed")
    assert [e["seq"] for e in held] == list(range(53))
    assert held[20]["type"] == "skipped" and "corrupt line" in held[20]["reason"]
    assert [e for e in held if e["seq"] != 20] == stream_events(root, "holed")
    eventually(lambda: host.get_json("/info")["quarantined"] == 1, 10, "the host's quarantine")
    assert host.stop() == 0, host.stderr()
    expected = checksums(reference_db(root, tmp_path / "reference.duckdb"))
    assert checksums(host.root / "waddle.duckdb") == expected
    with duckdb.connect(str(host.root / "waddle.duckdb"), read_only=True) as con:
        quarantined = con.execute("SELECT stream, seq, reason FROM quarantine").fetchall()
        status = con.execute("SELECT status FROM runs WHERE run_id = 'holed'").fetchall()
    assert [(s, q) for s, q, _ in quarantined] == [("holed", 20)]
    assert quarantined[0][2].startswith("skipped by the relay: ")
    assert status == [("finished",)], "the events after the gap are in the tables"


def test_a_gap_longer_than_placeholders_stand_for_parks_only_that_stream(
    host: Server, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parts, "MAX_SKIPPED", 2)
    root = tmp_path / "w"
    write_run(root, "holed", 50)
    write_run(root, "whole", 50)
    corrupt_lines(root, "holed", 20, 21, 22)
    relay = relay_once(root, host.url)
    assert list(relay.parked) == ["holed"]
    assert "seq 20" in relay.parked["holed"] and "placeholders" in relay.parked["holed"]
    assert stream_events(host.root, "whole") == stream_events(root, "whole")
    assert [e["seq"] for e in stream_events(host.root, "holed")] == list(range(20))
    parked = [r for r in caplog.records if r.name == "waddle.relay" and "'holed'" in r.getMessage()]
    assert len(parked) == 1 and parked[0].levelno == logging.ERROR
    assert relayed(root, host.url).get("holed", -1) < 20, "a parked stream is not committed"


def test_requests_shrink_until_the_host_takes_them(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write_run(root, "wide", 3000, payload=mixed)
    limited = start_server(tmp_path / "limited", "--max-body-bytes", str(64 * 1024))
    try:
        relay = relay_once(root, limited.url)
        assert relay.parked == {} and relay.sender.post_bytes <= 64 * 1024
        assert log_events(limited.root) == log_events(root)
    finally:
        limited.stop()


def test_handling_a_batch_twice_sends_nothing_new(host: Server, tmp_path: Path) -> None:
    from waddle.eventlog.reader import LogReader

    root = tmp_path / "w"
    write_run(root, "twice", 40)
    relay = RelayConsumer(root, host.url, backoff=FAST)
    relay.start({})
    try:
        batches = LogReader(root).poll({})
        relay.handle(batches)
        first = relay.commit()
        relay.handle(batches)
        assert relay.commit() == first
    finally:
        relay.close()
    assert stream_events(host.root, "twice") == stream_events(root, "twice")


def test_a_live_tail_is_paced_not_posted_every_poll(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    host = fake_host(held_all)
    root = tmp_path / "w"
    writer = open_stream(root, "live")
    writer.append("run", run_fields("live"))
    stop = threading.Event()
    relay = RelayConsumer(root, host.url, stop=stop, linger=0.5, backoff=FAST)
    thread = threading.Thread(
        target=run_consumer, args=(relay, root, stop), kwargs={"interval": 0.01}, daemon=True
    )
    thread.start()
    began = time.monotonic()
    for step in range(150):  # about 1.5 s of a live run
        writer.append("metrics", {"step": step, "data": {"loss": step}})
        time.sleep(0.01)
    writer.close()
    eventually(lambda: relay.acked().get("live", Offset()).seq == 150, 10, "the tail")
    seconds = time.monotonic() - began
    stop.set()
    thread.join(10)
    assert len(host.requests) <= seconds / 0.5 + 2, f"{len(host.requests)} in {seconds:.1f}s"
    assert sent_seqs(host.requests) == {"live": list(range(151))}


def lingers(
    fake_host: Callable[..., FakeHost],
    monkeypatch: pytest.MonkeyPatch,
    root: Path,
    batches: list[Any],
    grow: str | None,
) -> list[float]:
    """The waits after handling ``batches`` (after ``grow`` grew once more, as a live
    stream does while the relay sends), recorded instead of waited."""
    host = fake_host(held_all)
    relay = RelayConsumer(root, host.url, linger=30, backoff=FAST)
    waits: list[float] = []
    monkeypatch.setattr(relay.sender, "sleep", lambda seconds: waits.append(seconds) or False)
    relay.start({})
    try:
        if grow is not None:
            writer = open_stream(root, grow, resume=True)
            writer.append("metrics", {"step": 99, "data": {"loss": 0.5}})
            writer.close()
        relay.handle(batches)
        assert relay.commit() == {b.stream: b.offset for b in batches}
    finally:
        relay.close()
    return waits


def test_many_live_streams_are_read_once_per_linger_even_while_they_grow(
    fake_host: Callable[..., FakeHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waddle.eventlog.reader import LogReader

    root = tmp_path / "w"
    for run in ("a", "b", "c"):
        write_run(root, run, 20, finish=None)
    batches = LogReader(root).poll({})
    assert all(batch.drained for batch in batches)
    waits = lingers(fake_host, monkeypatch, root, batches, grow="b")
    assert len(waits) == 1 and 0 < waits[0] <= 30, "a live round is paced though b grew"
    backlog = LogReader(root, batch_bytes=512).poll({})  # each read stops short of the end
    assert lingers(fake_host, monkeypatch, root, backlog, grow=None) == [], "a backlog never waits"


# -- multi-stream requests (/ingest/batch) -------------------------------------------------


def test_a_round_of_many_streams_goes_in_one_request(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    host = fake_host(held_all)
    root = tmp_path / "w"
    runs = [f"run{n}" for n in range(12)]
    for run in runs:
        write_run(root, run, 20)
    relay = relay_once(root, host.url)
    assert relay.parked == {} and relayed(root, host.url) == last_seqs(root)
    assert [r["path"] for r in host.requests] == ["/ingest/batch"]
    assert sent_seqs(host.requests) == {run: list(range(23)) for run in runs}


def test_a_refused_part_parks_its_stream_only_and_a_busy_one_is_deferred_then_sent_alone(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(request: dict[str, Any]) -> Reply:
        if not request["path"].startswith("/ingest/batch"):
            return held_all(request)
        entries = []
        for stream, events in parts_of(request):
            if stream == "refused":
                entries.append({"stream": stream, "status": 400, "error": "invalid_event",
                                "message": "no", "line": 2, "field": "data"})  # fmt: skip
            elif stream == "busy":
                entries.append({"stream": stream, "status": 503, "error": "write_failed",
                                "message": "disk full", "seq": -1})  # fmt: skip
            else:
                entries.append(held_part(stream, events))
        return 200, {"streams": entries}, {}

    host = fake_host(answer)
    root = tmp_path / "w"
    for run in ("ok", "refused", "busy"):
        write_run(root, run, 30)
    relay = relay_once(root, host.url, linger=0)  # no pause: the last commit resends it
    assert list(relay.parked) == ["refused"] and "invalid_event" in relay.parked["refused"]
    deferred = [r.getMessage() for r in caplog.records if "backs off alone" in r.getMessage()]
    assert len(deferred) == 1 and "'busy'" in deferred[0]
    assert relay.deferred == {}, "the last commit sends it from the log, whatever its wait"
    assert relayed(root, host.url) == {s: q for s, q in last_seqs(root).items() if s != "refused"}
    alone = [r["path"] for r in host.requests if not r["path"].startswith("/ingest/batch")]
    assert alone == ["/ingest?stream=busy"], "the busy part is resent alone, nothing else"


def test_a_host_without_ingest_batch_gets_each_stream_alone(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def older(request: dict[str, Any]) -> Reply:
        if request["path"].startswith("/ingest/batch"):
            return 404, {"error": "not_found", "detail": "no such endpoint"}, {}
        return held_all(request)

    host = fake_host(older)
    root = tmp_path / "w"
    for run in ("a", "b", "c"):
        write_run(root, run, 30)
    relay = relay_once(root, host.url)
    assert relay.failure is None and relay.parked == {}
    assert relayed(root, host.url) == last_seqs(root)
    batched = [r for r in host.requests if r["path"].startswith("/ingest/batch")]
    assert len(batched) == 1, "asked once, then never again"
    alone = [r for r in host.requests if r not in batched]
    assert sent_seqs(alone) == {s: list(range(33)) for s in ("a", "b", "c")}
    assert len([r for r in caplog.records if "/ingest/batch" in r.getMessage()]) == 1


def test_lines_go_as_the_log_holds_them(fake_host: Callable[..., FakeHost], tmp_path: Path) -> None:
    host = fake_host(held_all)
    root = tmp_path / "w"
    write_run(root, "raw", 40, payload=mixed)
    relay_once(root, host.url)
    (segment,) = (log_dir(root) / "raw").glob("*.ndjson")
    body = b"".join(r["body"] for r in host.requests)
    assert body == b'{"stream":"raw","events":43}\n' + segment.read_bytes()


def test_a_whole_request_refusal_is_logged_once_per_cause_and_its_parts_go_alone(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def unframed(request: dict[str, Any]) -> Reply:
        if not request["path"].startswith("/ingest/batch"):
            return held_all(request)
        if "run0" in dict(parts_of(request)):
            return 400, {"error": "invalid_body", "detail": "a header expected", "line": 7}, {}
        return 400, {"error": "invalid_json", "detail": "not JSON", "line": 3}, {}

    host = fake_host(unframed)
    root = tmp_path / "w"
    runs = [f"run{n}" for n in range(6)]
    for run in runs:
        write_run(root, run, 20)
    part = (log_dir(root) / "run0" / segment_name(0)).stat().st_size
    relay = relay_once(root, host.url, post_bytes=2 * part + 200)  # two streams a request
    assert relay.parked == {} and relayed(root, host.url) == last_seqs(root)
    batched = [r for r in host.requests if r["path"].startswith("/ingest/batch")]
    assert len(batched) == 3, "every round's requests are still tried as batches"
    alone = [r for r in host.requests if r not in batched]
    assert sent_seqs(alone) == {run: list(range(23)) for run in runs}
    warnings = [r for r in caplog.records if "multi-stream request" in r.getMessage()]
    assert [w.levelno for w in warnings] == [logging.WARNING] * 2, "once per cause"
    messages = sorted(w.getMessage() for w in warnings)
    assert "invalid_body" in messages[0] and "a header expected (line 7" in messages[0]
    assert "invalid_json" in messages[1] and "not JSON (line 3" in messages[1]


def test_a_request_stays_under_post_bytes_with_its_part_headers(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    host = fake_host(held_all)
    root = tmp_path / "w"
    runs = [f"run{n:02d}" for n in range(12)]
    for run in runs:
        write_run(root, run, 3)
    sizes = [(log_dir(root) / run / segment_name(0)).stat().st_size for run in runs]
    post_bytes = sum(sizes[:3])  # three streams' lines exactly, without their headers
    relay_once(root, host.url, post_bytes=post_bytes)
    assert relayed(root, host.url) == last_seqs(root)
    assert len(host.requests) > 1
    assert all(len(r["body"]) <= post_bytes for r in host.requests), [
        len(r["body"]) for r in host.requests
    ]


def acks_before_the_host_holds(
    relay: RelayConsumer, host_root: Path, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, int, int]]:
    """Check each of ``relay``'s acknowledgements against the host's log at that moment;
    the list fills with (stream, seq acknowledged, seq the host held) of any too early."""
    early: list[tuple[str, int, int]] = []
    ack = relay._ack

    def checked(stream: str, end: Offset) -> None:
        held = last_seq(log_dir(host_root) / stream)
        if end.seq > held:
            early.append((stream, end.seq, held))
        ack(stream, end)

    monkeypatch.setattr(relay, "_ack", checked)
    return early


def test_a_multi_stream_request_over_the_host_limit_is_split_until_it_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "w"
    runs = [f"run{n}" for n in range(6)]
    for run in runs:
        write_run(root, run, 60)
    assert all((log_dir(root) / r / segment_name(0)).stat().st_size < 8192 for r in runs)
    limited = start_server(tmp_path / "limited", "--max-body-bytes", str(16 * 1024))
    try:
        relay = RelayConsumer(root, limited.url, backoff=FAST)
        early = acks_before_the_host_holds(relay, limited.root, monkeypatch)
        requests: list[int] = []
        send_parts, send = relay.sender.send_parts, relay.sender.send
        monkeypatch.setattr(
            relay.sender, "send_parts", lambda ps: requests.append(len(ps)) or send_parts(ps)
        )
        alone: list[str] = []
        monkeypatch.setattr(relay.sender, "send", lambda s, *a: alone.append(s) or send(s, *a))
        run_consumer(relay, root, threading.Event(), once=True)
        assert relay.parked == {} and relay.failure is None
        assert requests[0] == len(runs) and max(requests[1:]) > 1, requests
        assert alone == [], "the halves fit: no stream was sent alone"
        assert relay.sender.post_bytes <= 16 * 1024
        assert early == []
        assert log_events(limited.root) == log_events(root)
        for run in runs:
            assert [e["seq"] for e in stream_events(limited.root, run)] == list(range(63))
    finally:
        assert limited.stop() == 0, limited.stderr()


def test_a_part_the_host_lacks_is_resent_from_where_it_expects_beside_parts_it_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "w"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    writers = {run: open_stream(root, run) for run in ("kept", "lost")}
    for run, writer in writers.items():
        writer.append("run", run_fields(run))
        for step in range(50):
            writer.append("metrics", {"step": step, "data": {"loss": step}})
    first = central(tmp_path / "first", port)
    relay_once(root, url)
    assert first.stop() == 0, first.stderr()
    # The replacement host holds "kept" but lost "lost" (seqs 0..50).
    shutil.copytree(log_dir(first.root) / "kept", log_dir(tmp_path / "second") / "kept")
    second = central(tmp_path / "second", port)
    try:
        for step in range(50, 70):
            for writer in writers.values():
                writer.append("metrics", {"step": step, "data": {"loss": step}})
        for writer in writers.values():
            writer.close()
        write_run(root, "new", 30)
        relay = RelayConsumer(root, url, backoff=FAST)
        early = acks_before_the_host_holds(relay, second.root, monkeypatch)
        answers: dict[str, Held | Exception] = {}
        settle = relay.sender._settle

        def noted(part: parts.Part, answer: Held | HostRefused) -> bool:
            answers[part.stream] = answer
            return settle(part, answer)

        monkeypatch.setattr(relay.sender, "_settle", noted)
        run_consumer(relay, root, threading.Event(), once=True)
        assert answers == {"kept": Held(70), "lost": Held(-1, gap=True), "new": Held(32)}
        assert relay.parked == {} and relayed(root, url) == last_seqs(root)
        assert early == []
        for stream, last in last_seqs(root).items():
            held = stream_events(second.root, stream)
            assert [e["seq"] for e in held] == list(range(last + 1)), stream
        assert log_events(second.root) == log_events(root)
    finally:
        assert second.stop() == 0, second.stderr()


START = Offset()


class RecordingReader(LogReader):
    """A reader that notes the last seq of every batch with events it reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.read_seqs: list[int] = []

    def read(self, stream: str, offset: Offset = START) -> Batch:
        batch = super().read(stream, offset)
        if batch.events:
            self.read_seqs.append(batch.events[-1]["seq"])
        return batch


def test_a_live_round_is_read_while_the_one_before_it_lands(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    """The run loop commits every second; when that commit waited for the round in
    flight, the next round was not read until it landed, so a live tail was read no
    faster than its rounds landed, whatever ``linger`` said."""
    arrived, release = threading.Event(), threading.Event()

    def answer(request: dict[str, Any]) -> Reply:
        if any(event["seq"] == 1 for _, events in parts_of(request) for event in events):
            arrived.set()
            release.wait(30)
        return held_all(request)

    host = fake_host(answer)
    root = tmp_path / "w"
    live = open_stream(root, "live")
    live.append("run", run_fields("live"))
    stop = threading.Event()
    relay = RelayConsumer(root, host.url, stop=stop, backoff=FAST, linger=0.05)
    reader = RecordingReader(root)
    thread = threading.Thread(
        target=run_consumer,
        args=(relay, root, stop),
        kwargs={"interval": 0.02, "reader": reader},
        daemon=True,
    )
    thread.start()
    try:
        eventually(lambda: relayed(root, host.url) == {"live": 0}, 10, "the run event")
        time.sleep(COMMIT_INTERVAL_S + 0.2)  # so that the loop commits after the next round
        live.append("metrics", {"step": 0, "data": {"x": 1}})
        assert arrived.wait(10)
        live.append("metrics", {"step": 1, "data": {"x": 2}})
        eventually(lambda: 2 in reader.read_seqs, 10, "the next round read, seq 1 in flight")
        release.set()
        eventually(lambda: relay.acked()["live"].seq == 2, 10, "both rounds landed")
    finally:
        release.set()
        stop.set()
        thread.join(30)
        live.close()
    assert relayed(root, host.url) == {"live": 2}
    assert sent_seqs(host.requests) == {"live": [0, 1, 2]}


def test_once_commits_every_round_even_from_a_host_slower_than_linger(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    """A live round's commit may return before it lands (the next round settles it),
    but not the loop's last: ``waddle-consume --once --relay`` exited 0 having committed
    nothing of its last round whenever the host answered slower than ``linger``."""

    def slow(request: dict[str, Any]) -> Reply:
        time.sleep(0.5)  # longer than linger: the answer lands after the loop's last commit
        return held_all(request)

    host = fake_host(slow)
    root = tmp_path / "w"
    for run in ("a", "b"):
        write_run(root, run, 30)
    stop = threading.Event()  # the daemon gives its relay the loop's stop
    relay = RelayConsumer(root, host.url, stop=stop, backoff=FAST, linger=0.05)
    committed = run_consumer(relay, root, stop, once=True)
    assert committed == relay.acked() and relayed(root, host.url) == last_seqs(root)


def test_consume_once_does_not_wait_out_a_linger_before_it_ends(
    fake_host: Callable[..., FakeHost], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``waddle-consume --once --relay``: its last round is small and drained, as a live
    tail's; pacing it only delayed the exit by ``linger`` (half a second a run)."""
    host = fake_host(held_all)
    root = tmp_path / "w"
    for run in ("a", "b"):
        write_run(root, run, 30)
    paced: list[float] = []
    sleep = Sender.sleep
    monkeypatch.setattr(Sender, "sleep", lambda self, s: paced.append(s) or sleep(self, s))
    assert consume(root, ["duckdb"], once=True, relays=[host.url]) == 0
    assert relayed(root, host.url) == last_seqs(root)
    assert paced == []


def test_once_ends_in_an_error_naming_a_stream_the_host_still_refuses(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    """A cron'd ``waddle-consume --once --relay`` must not report success while a
    deferred stream is undelivered: the others are committed, then the run fails."""

    def refuse_busy(request: dict[str, Any]) -> Reply:
        busy = {"error": "write_failed", "message": "fsync failed", "seq": -1}
        if not request["path"].startswith("/ingest/batch"):
            if request["path"].endswith("=busy"):
                return 503, busy, {}
            return held_all(request)
        entries = [
            {"stream": stream, "status": 503, **busy}
            if stream == "busy"
            else held_part(stream, events)
            for stream, events in parts_of(request)
        ]
        return 200, {"streams": entries}, {}

    host = fake_host(refuse_busy)
    root = tmp_path / "w"
    for run in ("ok", "busy"):
        write_run(root, run, 30)
    stop = threading.Event()
    relay = RelayConsumer(root, host.url, stop=stop, backoff=FAST)
    with pytest.raises(WaddleError, match="'busy'"):
        run_consumer(relay, root, stop, once=True)
    assert relayed(root, host.url) == {"ok": last_seqs(root)["ok"]}
    assert sent_seqs(host.requests)["busy"].count(0) >= 2, "tried again before giving up"


def test_a_deferred_stream_that_gets_parked_is_no_longer_deferred(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    """Busy first (deferred), then refused when sent again (parked): it is parked only,
    and a ``--once`` run says so instead of calling it still deferred."""

    def busy_then_refused(request: dict[str, Any]) -> Reply:
        if not request["path"].startswith("/ingest/batch"):
            return 400, {"error": "invalid_event", "message": "no", "line": 1}, {}
        busy = {"status": 503, "error": "write_failed", "message": "fsync failed", "seq": -1}
        return 200, {"streams": [{"stream": s, **busy} for s, _ in parts_of(request)]}, {}

    host = fake_host(busy_then_refused)
    root = tmp_path / "w"
    write_run(root, "flaky", 30)
    relay = relay_once(root, host.url)
    assert list(relay.parked) == ["flaky"] and relay.deferred == {}


# In a ``waddle relay`` process: the tail's quiet wait lasts 120 s, and a file says when
# the tail rests (only with nothing live), so the test signals a tail that waits.
RESTING = """
import os, pathlib
from waddle.eventlog import reader

reader.IDLE_WAIT_S = 120.0
_rest, _marker = reader.LogReader._rest, pathlib.Path(os.environ["RELAY_RESTING"])


def _resting(self, stop, until):
    _marker.touch()
    _rest(self, stop, until)


reader.LogReader._rest = _resting
"""


def test_waddle_relay_stops_on_sigterm_while_its_tail_waits_with_nothing_live(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    """The signal's stop must wake the tail: with a plain event it waited out its whole
    quiet wait (``IDLE_WAIT_S``: 120 s here) before the relay could stop."""
    host = fake_host(held_all)
    root = tmp_path / "w"
    for run in ("a", "b"):
        write_run(root, run, 5)
    past = time.time() - 3600  # a folder changed within 2 s is polled, not rested on
    for folder in (log_dir(root) / "a", log_dir(root) / "b", log_dir(root)):
        os.utime(folder, (past, past))
    site, resting = tmp_path / "site", tmp_path / "resting"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RESTING)
    env = clean_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    env["RELAY_RESTING"] = str(resting)
    argv = [*WADDLE, "relay", host.url, "--dir", str(root), "--interval", "0.02"]
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        eventually(resting.exists, 30, "the tail resting (every stream read and parked)")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)  # far below the 120 s it waited before
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
    assert rc == 0, err.decode(errors="replace")
    assert relayed(root, host.url) == last_seqs(root), "its last commit holds every stream"


def test_parts_a_host_shutting_down_refuses_go_again_together_not_stream_by_stream(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A host-wide 503 of each part (the host stopping) is an outage of the host, not of
    each stream: one warning and the round again as one request, not a deferral, a
    warning and a request of its own per stream."""

    host = fake_host(lambda r: shutting_down(r) if len(host.requests) <= 1 else held_all(r))
    root = tmp_path / "w"
    runs = [f"run{n}" for n in range(6)]
    for run in runs:
        write_run(root, run, 10)
    relay = relay_once(root, host.url)
    assert relay.deferred == {} and relay.parked == {}
    assert relayed(root, host.url) == last_seqs(root)
    assert [r["path"] for r in host.requests] == ["/ingest/batch", "/ingest/batch"]
    assert sorted(stream for stream, _ in parts_of(host.requests[1])) == runs
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "shutting_down" in w]) == 1, warnings
    assert not [w for w in warnings if "backs off alone" in w], warnings


def shutting_down(request: dict[str, Any]) -> Reply:
    """A host stopping: each part of the request answered a host-wide 503."""
    going = {"status": 503, "error": "shutting_down", "message": "the host is stopping"}
    return 200, {"streams": [{"stream": s, **going} for s, _ in parts_of(request)]}, {}


def test_a_host_shutting_down_for_many_rounds_is_one_outage(
    fake_host: Callable[..., FakeHost], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Round after round of host-wide 503s is one outage: one warning when it begins and
    one when it ends, not a pair per round (and no stack frame per round)."""
    host = fake_host(lambda r: shutting_down(r) if len(host.requests) <= 40 else held_all(r))
    root = tmp_path / "w"
    for run in ["a", "b", "c"]:
        write_run(root, run, 10)
    with caplog.at_level(logging.WARNING, "waddle.relay"):
        relay = RelayConsumer(root, host.url, backoff=Backoff(base=0.001, cap=0.002))
        run_consumer(relay, root, threading.Event(), once=True)
    assert relayed(root, host.url) == last_seqs(root)
    assert len(host.requests) == 41
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "retrying with backoff" in w]) == 1, warnings
    assert len([w for w in warnings if "reachable again" in w]) == 1, warnings


def test_a_host_that_stays_shutting_down_is_given_up_on(
    fake_host: Callable[..., FakeHost], tmp_path: Path
) -> None:
    """``give_up_after`` (``waddle sync --timeout``) counts a host that answers every part
    "shutting down" as away: the relay gives up instead of asking for ever."""
    host = fake_host(shutting_down)
    root = tmp_path / "w"
    write_run(root, "a", 10)
    stop = threading.Event()
    relay = RelayConsumer(
        root,
        host.url,
        stop=stop,
        stop_on_failure=True,
        backoff=Backoff(base=0.001, cap=0.01),
        give_up_after=0.5,
    )
    thread = threading.Thread(target=run_consumer, args=(relay, root, stop), daemon=True)
    thread.start()
    thread.join(30)
    gave_up = not thread.is_alive()
    stop.set()  # ends a relay that never gives up, so the test ends either way
    thread.join(30)
    assert gave_up, "it never gave up"
    assert relay.failure is not None and "within 0.5s" in str(relay.failure)


@pytest.mark.parametrize(
    ("idle_s", "cpu_s", "most"),
    [
        (3600.0, 0.0, 0.5),  # an idle hour is not reading: the next round after linger
        (0.0, 100.0, consumer_module.MAX_PACE_S),  # however long a read took: capped
    ],
)
def test_a_live_round_s_pace_is_bounded(
    fake_host: Callable[..., FakeHost],
    tmp_path: Path,
    idle_s: float,
    cpu_s: float,
    most: float,
) -> None:
    """A live round is followed by the next after ``linger``, or after its read's CPU over
    READ_SHARE, never later than MAX_PACE_S: the wait for news before a round is not its
    reading (an idle hour once paced the next round 2.3 hours later)."""
    host = fake_host(held_all)
    root = tmp_path / "w"
    write_run(root, "a", 10, finish=None)
    relay = RelayConsumer(root, host.url, backoff=FAST, linger=0.5)
    relay.start({})
    asked: list[float] = []
    relay.sender.sleep = lambda seconds: asked.append(seconds) or False  # type: ignore[method-assign]
    batches = LogReader(root).poll({})
    relay._read_began -= idle_s
    relay._read_cpu -= cpu_s
    try:
        relay.handle(batches)
    finally:
        relay.interrupt()
        relay.close()
    assert len(asked) == 1 and asked[0] <= most, asked

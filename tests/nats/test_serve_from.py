"""``waddle serve --from nats://``: the ingester writes through the app's own log, so a
stream that arrives both by ``/ingest`` and by JetStream has one writer (real processes)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.consumers.logs import write_run
from tests.consumers.relay.support import caught_up, last_seqs, log_events
from tests.helpers import eventually
from tests.nats.conftest import NatsServer
from tests.nats.test_publisher import relay_once
from tests.web.conftest import start_server
from waddle.eventlog.segment import log_dir, segment_name


def test_a_stream_sent_by_ingest_and_by_jetstream_lands_once_in_one_log(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    source = tmp_path / "machine"
    write_run(source, "shared", 40)
    write_run(source, "broker-only", 5)
    lines = (log_dir(source) / "shared" / segment_name(0)).read_bytes().splitlines(True)
    root = tmp_path / "host"
    server = start_server(root, "--from", nats_server.url, "--name", "one")
    try:
        # The first ten events come by /ingest: the host keeps that stream's writer open.
        reply = server.ingest("shared", b"".join(lines[:10]), ndjson=True)
        assert reply.status == 200, reply.body
        relay_once(source, nats_server.url)  # then the whole stream through the broker
        expected = last_seqs(source)
        eventually(lambda: last_seqs(root) == expected, 60, "the ingester to take both")
        eventually(lambda: caught_up(root, "duckdb", expected), 60, "the tables")
        assert server.stop(signal.SIGTERM) == 0, server.stderr()
    finally:
        server.stop(signal.SIGKILL)
    assert log_events(root) == log_events(source)
    assert "one writer" not in server.stderr()

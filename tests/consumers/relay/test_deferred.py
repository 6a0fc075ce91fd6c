"""A stream the host refuses for now (503 ``write_failed``: its fsync failed on the host)
backs off alone: the relay's other streams keep arriving at that host meanwhile, and
after the host restarts the refused stream arrives exactly once, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.consumers.logs import open_stream, run_fields, write_run
from tests.consumers.relay.support import (
    central,
    checksums,
    free_port,
    log_events,
    reference_db,
    stream_events,
    wait_delivered,
)
from tests.helpers import eventually
from tests.web.test_ingest_fsync_fault import inject_fsync_fault, relaying


def test_a_stream_the_host_refuses_for_now_holds_up_no_other_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "machine"
    bad = write_run(root, "bad", 300)
    live = open_stream(root, "live")
    live.append("run", run_fields("live"))
    flag, seen = inject_fsync_fault(tmp_path, monkeypatch, bad)
    port = free_port()
    server = central(tmp_path / "central", port)
    relay, thread, stop = relaying(root, f"http://127.0.0.1:{port}")
    try:
        eventually(
            lambda: f"fsync of stream {bad} failed: its events" in server.stderr(), 60, "the error"
        )
        flag.unlink()  # the host refuses the stream until it restarts all the same
        for step in range(200):  # the live run goes on logging while that stream is refused
            live.append("metrics", {"step": step, "data": {"loss": 1 / (step + 1)}})
        expected = stream_events(root, "live")
        eventually(
            lambda: stream_events(server.root, "live") == expected, 30, "the live run, meanwhile"
        )

        def refusals() -> list[str]:
            return [line.split()[1] for line in seen.read_text().splitlines() if bad in line]

        # Its resend comes on its own backoff, not before or after the live run's events:
        # wait for the host to refuse it again rather than race the two.
        eventually(lambda: len(refusals()) >= 2, 30, "the deferred stream tried again")
        assert set(refusals()) == {"WriteFailed"}, refusals()
        assert bad in relay.deferred and not relay.parked and relay.failure is None
        live.close()
        assert server.stop() == 0, server.stderr()
        server = central(tmp_path / "central", port)  # the operator restarts it
        wait_delivered(root, server, 60)
        assert log_events(server.root) == log_events(root)
        eventually(lambda: not relay.deferred, 30, "the stream taken again")
    finally:
        stop.set()
        thread.join(30)
        server.stop()
    reference = checksums(reference_db(root, tmp_path / "reference.duckdb"))
    assert checksums(server.root / "waddle.duckdb") == reference

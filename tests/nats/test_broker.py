"""``waddle nats setup`` against a real nats-server, and the subject and id rules."""

from __future__ import annotations

import asyncio
import io
import zlib
from contextlib import redirect_stdout

import pytest

from tests.nats.conftest import NatsServer, call, free_port
from waddle.cli.parser import main
from waddle.consumers.nats.broker import (
    LEASES,
    MEMBERS,
    STREAM,
    Layout,
    consumer_name,
    msg_id,
    pack,
    parse_msg_id,
    partition,
    setup,
    subject,
    unpack,
)
from waddle.consumers.nats.client import back_off
from waddle.consumers.relay.client import Backoff
from waddle.errors import UsageError


def run_setup(*args: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["nats", "setup", *args]) == 0
    return out.getvalue()


def test_setup_creates_the_layout_once_and_updates_its_limits(nats_server: NatsServer) -> None:
    url = nats_server.url
    first = run_setup("--url", url, "--duplicate-window", "60", "--max-age-days", "2")
    assert "stream WADDLE exists" in first  # the fixture set it up already
    config = nats_server.stream_info().config
    assert config.subjects == ["waddle.events.>"]
    assert config.duplicate_window == 60
    assert config.max_age == 2 * 86400
    assert config.retention == "limits"
    again = run_setup("--url", url, "--duplicate-window", "90")
    assert "exists" in again
    assert nats_server.stream_info().config.duplicate_window == 90

    assert config.metadata["waddle_partitions"] == "4"  # as the fixture set it up
    for where in range(4):
        consumer = call(url, lambda js, w=where: js.consumer_info(STREAM, consumer_name(w)))
        assert consumer.config.durable_name == f"waddle-ingest-{where}"
        assert consumer.config.filter_subject == f"waddle.events.{where}.>"
        assert consumer.config.ack_policy == "explicit"
        assert consumer.config.max_deliver == -1
    names = call(url, lambda js: js.streams_info())
    assert {info.config.name for info in names} == {STREAM, f"KV_{LEASES}", f"KV_{MEMBERS}"}
    leases = call(url, lambda js: js.stream_info(f"KV_{LEASES}"))
    assert leases.config.max_age == 15  # the default lease, set again by the last setup
    with pytest.raises(UsageError, match="has 4 partitions, not 8"):
        setup(url, Layout(partitions=8))


def test_setup_counts_unacknowledged_messages_in_windows(nats_server: NatsServer) -> None:
    url = nats_server.url

    def pending() -> set[int]:
        infos = [
            call(url, lambda js, w=w: js.consumer_info(STREAM, consumer_name(w))) for w in range(4)
        ]
        return {info.config.max_ack_pending for info in infos}

    setup(url, Layout(max_ack_pending=50_000))  # as an older Waddle set it up
    assert pending() == {50_000}
    run_setup("--url", url)  # its consumers are updated, not only new ones
    assert pending() == {2_048}  # windows of up to 128 KiB: about 256 MiB a partition


def test_setup_without_a_server_says_how_to_start_one() -> None:
    with pytest.raises(UsageError, match="nats-server -js"):
        setup(f"nats://127.0.0.1:{free_port()}", timeout=20)
    with pytest.raises(UsageError, match="nats://HOST:PORT"):
        setup("http://127.0.0.1:4222")


def test_subjects_carry_project_and_stream_as_single_tokens() -> None:
    assert zlib.crc32(b"abc123") % 16 == 12  # the partition: CRC-32 of the id, modulo P
    assert subject("vision", "abc123", 16) == "waddle.events.12.vision.abc123"
    assert subject("my.proj *>", "abc123.2", 1) == "waddle.events.0.my_proj_.abc123_2"
    assert subject(None, "abc", 1) == "waddle.events.0._.abc"
    assert partition("abc123", 16) == 12


@pytest.mark.parametrize("stream", ["abc", "abc.3", "a-b_c.d"])
def test_message_ids_name_stream_and_seq(stream: str) -> None:
    assert msg_id(stream, 41, 45) == f"{stream}:41-45"
    assert parse_msg_id(msg_id(stream, 41, 45)) == (stream, 41)
    assert parse_msg_id(f"{stream}:41") == (stream, 41)  # one event, from older relays


@pytest.mark.parametrize(
    "value", [None, "", "abc", "abc:", ":4", "abc:-1", "abc:x", "abc:4-", "abc:4-x", ":4-5"]
)
def test_other_message_ids_are_not_ours(value: str | None) -> None:
    assert parse_msg_id(value) is None


def test_a_backoff_wait_retries_after_its_step_and_ends_early_on_a_stop() -> None:
    looks: list[int] = []

    def stopping_on_third_look() -> bool:
        looks.append(1)
        return len(looks) >= 3

    step = Backoff(base=0.02, cap=0.02)
    assert asyncio.run(back_off(step, 0, lambda: False)) is True
    assert asyncio.run(back_off(Backoff(base=3600, cap=3600), 5, stopping_on_third_look)) is False
    assert len(looks) == 3


def test_windows_are_cut_at_the_byte_limit_and_count_and_a_long_line_goes_alone() -> None:
    lines = [b"a" * 40 + b"\n", b"b" * 40 + b"\n", b"c" * 200 + b"\n", b"d\n", b"e\n"]
    assert pack(lines, 0, 100, 10) == [(0, 2), (2, 3), (3, 5)]
    assert pack(lines, 1, 100, 2) == [(1, 2), (2, 3)]  # at most two messages
    assert pack(lines, 5, 100, 10) == []
    assert unpack(b"".join(lines[3:])) == [b"d", b"e"]
    assert unpack(b'{"seq": 4}') == [b'{"seq": 4}']  # one event, as older relays sent it

"""``WS /ws`` with a real server, a real producer and real ``websockets`` clients."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

import waddle
from tests.helpers import eventually, raw_events, raw_log
from waddle.consumers.broadcast import Broadcaster
from waddle.web.settings import Settings
from waddle.web.ws import MAX_PROJECTS, MAX_RUNS, MAX_SINCE, Client

from .conftest import Server
from .inprocess import InProcessServer, in_process_server
from .wsclient import (
    Received,
    collect,
    open_client,
    open_stalled_client,
    raw_client,
    read_to_end,
    recv,
    send,
    subscribe,
    text_frame,
)

TIMEOUT_S = 60.0


def produce(root: Path, run_id: str, steps: int, project: str = "live", noise: int = 0) -> None:
    """Log ``steps`` steps; ``noise`` adds that many random (incompressible) bytes to each."""
    run = waddle.init(project=project, root=root, id=run_id, system_metrics=False)
    for step in range(steps):
        extra = {"noise": os.urandom(noise).hex()} if noise else {}
        run.log({"loss": float("nan") if step == 7 else 1.0 / (step + 1), **extra})
    run.finish()


def finished(stream: str) -> Any:
    return lambda got: any(e["type"] == "finish" for e in got.events.get(stream, []))


def test_a_subscriber_gets_every_event_in_order(serve: Any) -> None:
    server: Server = serve()

    async def scenario() -> Received:
        async with open_client(server.ws_url) as ws:
            ack = await subscribe(ws, project="live")
            assert ack["projects"] == ["live"]
            producer = threading.Thread(target=produce, args=(server.root, "wsorder", 3000))
            producer.start()
            try:
                return await collect(ws, finished("wsorder"), timeout=TIMEOUT_S)
            finally:
                producer.join(TIMEOUT_S)

    received = asyncio.run(scenario())
    expected = raw_events(raw_log(server.root, "wsorder"))
    assert received.events["wsorder"] == expected  # NaN spelled "NaN", as in the log
    assert expected[8]["data"]["loss"] == "NaN"
    assert list(received.events) == ["wsorder"]


def test_a_client_that_resumes_gets_exactly_the_missed_events(serve: Any) -> None:
    server: Server = serve()
    run = waddle.init(project="resume", root=server.root, id="wsresume", system_metrics=False)
    for step in range(200):
        run.log({"loss": step})

    async def scenario() -> Received:
        async with open_client(server.ws_url) as ws:
            ack = await subscribe(ws, runs=["wsresume"], since={"wsresume": 120})
            assert ack["replaying"] == {"wsresume": 120}

            def more() -> None:
                for step in range(200, 400):
                    run.log({"loss": step})
                run.finish()

            producer = threading.Thread(target=more)
            producer.start()
            done = finished("wsresume")
            try:
                return await collect(
                    ws, lambda got: done(got) and got.of_type("replayed"), timeout=TIMEOUT_S
                )
            finally:
                producer.join(TIMEOUT_S)

    received = asyncio.run(scenario())
    log = raw_events(raw_log(server.root, "wsresume"))
    assert received.seqs("wsresume") == list(range(121, len(log)))
    assert received.events["wsresume"] == log[121:]
    replayed = received.of_type("replayed")
    assert len(replayed) == 1 and replayed[0]["stream"] == "wsresume"


def test_resuming_a_finished_run_replays_only_the_missed_events(serve: Any) -> None:
    server: Server = serve()
    produce(server.root, "wsdone", 50, project="done")

    async def scenario() -> Received:
        async with open_client(server.ws_url) as ws:
            await subscribe(ws, project="done", since={"wsdone": 10})
            return await collect(ws, lambda got: got.of_type("replayed"))

    received = asyncio.run(scenario())
    log = raw_events(raw_log(server.root, "wsdone"))
    assert received.events["wsdone"] == log[11:]


@pytest.mark.slow
def test_a_client_that_never_reads_does_not_stall_another(serve: Any) -> None:
    server: Server = serve("--ws-send-timeout", "1", "--ws-queue-events", "2000")

    async def scenario() -> tuple[Received, bool]:
        stalled_client = open_stalled_client(server.ws_url, server.host, server.port)
        async with stalled_client as stalled, open_client(server.ws_url) as reader:
            await subscribe(stalled, project="live")
            await subscribe(reader, project="live")
            producer = threading.Thread(
                target=produce, args=(server.root, "wsslow", 20_000), kwargs={"noise": 1000}
            )
            producer.start()
            try:
                received = await collect(reader, finished("wsslow"), timeout=TIMEOUT_S)
            finally:
                producer.join(TIMEOUT_S)
            reply = await asyncio.to_thread(server.get, "/info")
            assert reply.status == 200
            await asyncio.sleep(2.5)  # past the send timeout: the server gives up on it
            closed = False
            try:
                for _ in range(100_000):
                    await recv(stalled, timeout=10)
            except ConnectionClosed:
                closed = True
            return received, closed

    received, closed = asyncio.run(scenario())
    assert received.seqs("wsslow") == list(range(20_003))
    assert closed, "the server kept a client that read nothing for longer than the timeout"


def test_malformed_messages_get_errors_and_the_connection_stays_usable(serve: Any) -> None:
    server: Server = serve()
    bad = [
        "not json",
        b"\x00binary",
        "[1, 2]",
        {"op": "dance"},
        {"op": "subscribe"},
        {"op": "subscribe", "runs": "wsbad"},
        {"op": "subscribe", "runs": ["../etc"]},
        {"op": "subscribe", "project": ""},
        {"op": "subscribe", "project": 3},
        {"op": "subscribe", "runs": ["wsbad"], "since": {"wsbad": "x"}},
        {"op": "subscribe", "runs": ["wsbad"], "since": {"../x": 1}},
        {"op": "subscribe", "runs": ["wsbad"], "since": [1]},
    ]

    async def scenario() -> Received:
        async with open_client(server.ws_url) as ws:
            for message in bad:
                await send(ws, message)
                answer = await recv(ws)
                assert answer["type"] == "error" and answer["error"] == "invalid_message", message
                assert answer["detail"]
            await send(ws, {"op": "ping"})
            assert (await recv(ws))["type"] == "pong"
            await subscribe(ws, runs=["wsbad"])
            producer = threading.Thread(target=produce, args=(server.root, "wsbad", 20))
            producer.start()
            try:
                return await collect(ws, finished("wsbad"))
            finally:
                producer.join(TIMEOUT_S)

    received = asyncio.run(scenario())
    assert received.seqs("wsbad") == list(range(23))


def test_unsubscribe_stops_the_events(serve: Any) -> None:
    server: Server = serve()

    async def scenario() -> Received:
        async with open_client(server.ws_url) as ws:
            await subscribe(ws, runs=["wsunsub"])
            await send(ws, {"op": "unsubscribe"})
            assert (await recv(ws))["runs"] == []
            await subscribe(ws, runs=["wsother"])
            for run_id in ("wsunsub", "wsother"):
                await asyncio.to_thread(produce, server.root, run_id, 10)
            return await collect(ws, finished("wsother"))

    received = asyncio.run(scenario())
    assert list(received.events) == ["wsother"]


def test_the_token_guards_the_websocket(serve: Any) -> None:
    server: Server = serve(token="tok-ws")

    async def scenario() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with open_client(server.ws_url):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as wrong:
            async with open_client(server.ws_url + "?token=nope"):
                pass
        assert wrong.value.response.status_code == 401
        async with open_client(server.ws_url + "?token=tok-ws") as ws:
            await send(ws, {"op": "ping"})
            assert (await recv(ws))["type"] == "pong"
        headers = {"Authorization": "Bearer tok-ws"}
        async with open_client(server.ws_url, additional_headers=headers) as ws:
            await send(ws, {"op": "ping"})
            assert (await recv(ws))["type"] == "pong"
        with pytest.raises(InvalidStatus) as cross:
            async with open_client(server.ws_url + "?token=tok-ws", origin="http://evil.example"):
                pass
        assert cross.value.response.status_code == 403

    asyncio.run(scenario())


def test_since_ids_outside_the_subscription_leave_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    produce(root, "wsknown", 5, project="limits")
    strangers = {f"stranger{i:05d}": 3 for i in range(MAX_SINCE - 100)}
    absent_ranks = {f"wsknown.{rank}": -1 for rank in range(1, 100)}

    async def scenario(server: InProcessServer) -> weakref.ref[Any]:
        async with open_client(server.ws_url) as ws:
            since = {"wsknown": -1, **strangers, **absent_ranks}
            ack = await subscribe(ws, runs=["wsknown"], since=since)
            assert set(ack["replaying"]) == {"wsknown", *absent_ranks}
            replays = 1 + len(absent_ranks)
            received = await collect(ws, lambda got: len(got.of_type("replayed")) == replays)
            assert received.seqs("wsknown") == list(range(8))
            (subscriber,) = set(server.broadcaster.hub.subscribers)
            assert dict(subscriber.delivered) == {"wsknown": 7}
            assert dict(subscriber.replay) == {}
            assert len(server.broadcaster.directory) == 1  # only the stream in the log
            return weakref.ref(subscriber)

    with in_process_server(root, monkeypatch) as server:
        gone = asyncio.run(scenario(server))
        eventually(lambda: not server.broadcaster.hub.subscribers, what="the client to leave")
        gc.collect()
        assert gone() is None, "the subscriber outlived its connection"
        assert len(server.broadcaster.directory) == 1


def test_a_connection_follows_a_bounded_number_of_runs_projects_and_replays(
    tmp_path: Path,
) -> None:
    client = Client(FakeSocket(), Broadcaster(tmp_path), Settings(root=tmp_path))  # type: ignore[arg-type]

    def answer(**request: Any) -> dict[str, Any]:
        client.control.clear()
        asyncio.run(client.receive({"text": orjson.dumps({"op": "subscribe", **request})}))
        (message,) = client.control
        return message

    runs = [f"run{i:05d}" for i in range(MAX_RUNS + 1)]
    assert answer(runs=runs[:-1])["type"] == "subscribed"
    refused = answer(runs=runs[-1:])
    assert refused["type"] == "error" and str(MAX_RUNS) in refused["detail"]
    assert answer(runs=runs[:3])["type"] == "subscribed"  # already followed: no more
    for i in range(MAX_PROJECTS):
        assert answer(project=f"p{i}")["type"] == "subscribed"
    refused = answer(project="one-too-many")
    assert refused["type"] == "error" and str(MAX_PROJECTS) in refused["detail"]
    since = {f"run00000.{rank}": -1 for rank in range(1, MAX_SINCE + 1)}
    assert answer(runs=runs[:1], since=since)["type"] == "subscribed"
    refused = answer(runs=runs[:1], since={"run00001": -1})
    assert refused["type"] == "error" and str(MAX_SINCE) in refused["detail"]
    subscriber = client.subscriber
    assert len(subscriber.subscription.runs) == MAX_RUNS
    assert len(subscriber.subscription.projects) == MAX_PROJECTS
    assert len(subscriber.replay) == MAX_SINCE and not subscriber.delivered


def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    produce(root, "wsstall", 4000, noise=1000)  # about 8 MiB to replay: more than buffers hold
    stalled = in_process_server(root, monkeypatch, ws_send_timeout=0.5)
    with stalled as server, raw_client(server.host, server.port) as sock:
        sock.sendall(text_frame({"op": "subscribe", "runs": ["wsstall"], "since": {"wsstall": -1}}))
        port = sock.getsockname()[1]

        def server_holds_it() -> bool:
            return any(
                c.laddr.port == server.port and c.raddr and c.raddr.port == port
                for c in psutil.Process().net_connections("tcp")
            )

        assert server_holds_it()
        eventually(lambda: not server_holds_it(), what="the server to drop the stalled client")
        assert not server.broadcaster.hub.subscribers
        read_to_end(sock)  # EOF or reset, not a timeout: the connection is over


class FakeSocket:
    """Stands in for Starlette's WebSocket in the pump's unit tests."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))


def test_an_idle_connection_gets_heartbeats(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path, ws_heartbeat=0.05)
    socket = FakeSocket()
    client = Client(socket, Broadcaster(tmp_path), settings)  # type: ignore[arg-type]

    async def scenario() -> None:
        pump = asyncio.create_task(client.pump())
        await asyncio.sleep(0.3)
        pump.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pump

    asyncio.run(scenario())
    assert len(socket.sent) >= 3
    assert {message["type"] for message in socket.sent} == {"heartbeat"}

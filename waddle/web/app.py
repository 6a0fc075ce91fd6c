"""``create_app``: the server as a composition of consumers around a Starlette app.

While the app runs (its lifespan), two consumers tail ``<root>/log`` in threads of their
own, each through the one run loop (``waddle.consumers.base``): the DuckDB writer keeps
the tables the read endpoints query, and the live broadcaster feeds ``/ws``. ``/ingest``
is a producer into the same log, so what relays send reaches both like local runs do;
it tells them which streams it grew (``Hints``), so they read a relayed stream when it
grew rather than every poll, and hands the DuckDB writer the events it wrote
(``Handoff``), so that it does not parse them again.
On shutdown the ingest writers close (fsync, locks released), then each consumer stops
after its current round with its offsets committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, WebSocketRoute

from waddle.consumers.base import ConsumerThread
from waddle.consumers.broadcast import Broadcaster
from waddle.consumers.duckdb.handoff import Handoff, HandoffReader
from waddle.consumers.duckdb.writer import DuckDBWriter
from waddle.consumers.relay.consumer import RelayConsumer
from waddle.errors import StoreError, UsageError
from waddle.eventlog.reader import LogReader
from waddle.eventlog.watch import Hints
from waddle.web import api, blobs, media_api
from waddle.web.auth import TokenAuth
from waddle.web.dashboard_api import dashboard_routes
from waddle.web.errors import EXCEPTION_HANDLERS, json_response
from waddle.web.ingest import ingest
from waddle.web.ingest_batch import ingest_batch
from waddle.web.ingest_log import IngestLog
from waddle.web.openapi import spec
from waddle.web.settings import Settings
from waddle.web.ws import websocket_endpoint

logger = logging.getLogger("waddle.web")

STATIC = Path(__file__).parent / "static"


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi)


ROUTES = [
    Route("/", index),
    Route("/openapi.json", openapi),
    Route("/ingest", ingest, methods=["POST"]),
    Route("/ingest/batch", ingest_batch, methods=["POST"]),
    Route("/info", api.info),
    Route("/runs", api.runs),
    Route("/run/{run_id}", api.run),
    Route("/api/runs", api.api_runs),
    Route("/api/runs/{run_id}", api.api_run),
    Route("/api/runs/{run_id}/keys", api.api_keys),
    Route("/api/runs/{run_id}/metrics", api.api_metrics),
    Route("/api/runs/{run_id}/system", api.api_system),
    Route("/api/runs/{run_id}/console", api.api_console),
    Route("/api/runs/{run_id}/media", media_api.run_media),
    Route("/api/runs/{run_id}/media/{key:path}", media_api.media_values),
    Route("/api/runs/{run_id}/histograms/{key:path}", media_api.histograms),
    Route("/api/runs/{run_id}/tables/{key:path}", media_api.table),
    Route("/api/runs/{run_id}/artifacts", media_api.run_artifacts),
    Route("/api/artifacts/{name:path}", media_api.artifact),
    Route("/blobs/{sha256}", blobs.get_blob, methods=["GET", "HEAD"]),
    Route("/blobs/{sha256}", blobs.put_blob, methods=["PUT"]),
    WebSocketRoute("/ws", websocket_endpoint),
    *dashboard_routes(),
]


def create_app(settings: Settings) -> Starlette:
    """The ASGI app of one server; the consumers start and stop with its lifespan."""
    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(TokenAuth, token=settings.token, extra_hosts=(settings.host,))],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.openapi = spec()
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    state = app.state
    state.reader = LogReader(settings.root)
    # /ingest tells the consumers which streams it grew: they need not poll those.
    hints = Hints()
    # ... and hands the events it wrote to the DuckDB writer, which then need not parse
    # the same lines again (it reads the log whenever a hand-off is missing).
    handoff = Handoff()
    state.ingest_log = IngestLog(settings.root, hints=hints, handoff=handoff)
    writer = DuckDBWriter(settings.root, settings.database)
    writing = ConsumerThread(
        writer,
        settings.root,
        interval=settings.poll_interval,
        reader=HandoffReader(settings.root, hints=hints.subscribe(), handoff=handoff),
    )
    state.broadcaster = Broadcaster(settings.root)
    state.broadcaster.hub.attach(asyncio.get_running_loop())
    state.broadcaster.tail_reader.hints = hints.subscribe()
    relays = [RelayConsumer(settings.root, u, token=settings.relay_token) for u in settings.relays]
    threads = [
        writing,
        ConsumerThread(
            state.broadcaster,
            settings.root,
            interval=settings.poll_interval,
            reader=state.broadcaster.tail_reader,
        ),
        *(
            ConsumerThread(
                r,
                settings.root,
                interval=settings.poll_interval,
                reader=LogReader(settings.root, hints=hints.subscribe()),
            )
            for r in relays
        ),
    ]
    started: list[ConsumerThread] = []
    try:
        for thread in threads:
            await run_in_threadpool(thread.start)
            started.append(thread)
        state.cursor = functools.partial(_store_cursor, writer, writing)
        if settings.lake is not None:
            from waddle.store.lake import LakeViews

            state.cursor = LakeViews(settings.lake).wrap(state.cursor)
        yield
    finally:
        await run_in_threadpool(_stop, state.ingest_log, started)
        state.broadcaster.hub.detach()


def _store_cursor(writer: DuckDBWriter, thread: ConsumerThread) -> duckdb.DuckDBPyConnection:
    """A cursor on the writer's database, or ``StoreError`` (a 503) while it cannot write.

    While the writer waits out a failure (a full disk) its tables fall behind the log, so
    reads say so instead of answering stale data; they answer again once it commits.
    """
    failure = thread.failure
    if failure is not None:
        raise StoreError(f"the DuckDB writer cannot write: {failure}") from failure
    try:
        return writer.cursor()
    except UsageError as exc:  # closed between a failure and its retry
        raise StoreError("the DuckDB writer is restarting") from exc


def _stop(ingest_log: IngestLog, threads: list[ConsumerThread]) -> None:
    """Close the ingest writers, then stop each consumer (committing its offsets)."""
    ingest_log.close()
    for thread in threads:
        if isinstance(thread.consumer, RelayConsumer):
            thread.consumer.interrupt()  # do not wait out an unreachable central host
    for thread in reversed(threads):
        try:
            thread.stop(timeout=30)
        except Exception as exc:  # already logged with its traceback when it happened
            logger.error("waddle: consumer %s had stopped: %s", thread.consumer.name, exc)

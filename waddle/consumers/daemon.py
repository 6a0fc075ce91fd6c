"""``waddle-consume``: run the chosen consumers in one process until told to stop.

Each consumer runs the base loop (``run_consumer``) in a thread of its own, so a slow
one never holds up another; the main thread only waits for signals. SIGINT and SIGTERM
ask every loop to stop after its current round: each commits what it handled, closes
and the process exits 0; a second signal kills the process the default way
(``waddle.signals``). With
``once``, each consumer stops when it has caught up with the log. A transient failure (a
full disk, a store that cannot write) is logged when it happens and retried with backoff
(``waddle.consumers.retry``): the consumer resumes from its committed offsets and catches
up once the cause is gone. When one consumer fails for good (``PermanentError``, a bug),
the others are stopped too and the exit code is 1, so a supervisor restarts the daemon.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from waddle import signals
from waddle.consumers import plugins
from waddle.consumers.base import Consumer, run_consumer
from waddle.consumers.progress import CatchUpProgress
from waddle.consumers.retry import Retry
from waddle.errors import WaddleError
from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL
from waddle.signals import StopEvent, on_stop_signals

logger = logging.getLogger("waddle.consumers")

DEFAULT_CONSUMERS = ("duckdb",)


def consume(
    root: Path,
    names: Sequence[str] = (),
    *,
    duckdb_path: Path | None = None,
    lake_path: Path | None = None,
    once: bool = False,
    interval: float = DEFAULT_POLL_INTERVAL,
    progress: CatchUpProgress | None = None,
    relays: Sequence[str] = (),
    relay_token: str | None = None,
) -> int:
    """Run the consumers ``names`` (default: the DuckDB writer) and relays; the exit code."""
    stop = StopEvent()  # setting it wakes each tail waiting with no stream live
    try:
        consumers = [
            plugins.create(name, root, duckdb_path=duckdb_path, lake_path=lake_path)
            for name in dict.fromkeys(names or DEFAULT_CONSUMERS)
        ]
        if relays:
            from waddle.consumers.nats.broker import is_nats_url
            from waddle.consumers.nats.publisher import NatsRelay
            from waddle.consumers.relay.consumer import (
                DEFAULT_LINGER_S,
                RelayConsumer,
                resolve_token,
            )

            token = resolve_token(relay_token)
            # Pacing spares a live tail's reading; a run that ends once caught up would
            # only wait out its last round's linger before it sees that it has.
            linger = 0.0 if once else DEFAULT_LINGER_S
            consumers += [
                NatsRelay(root, url, stop=stop)
                if is_nats_url(url)
                else RelayConsumer(root, url, token=token, stop=stop, linger=linger)
                for url in dict.fromkeys(relays)
            ]
    except WaddleError as exc:
        logger.error("waddle-consume: %s", exc)
        return 2
    errors: list[BaseException] = []
    threads = [
        threading.Thread(
            target=_run,
            args=(consumer, root, stop, errors),
            kwargs={"once": once, "interval": interval, "progress": progress},
            name=f"waddle-consumer-{consumer.name}",
        )
        for consumer in consumers
    ]

    def on_signal(signum: int) -> None:
        logger.info("waddle-consume: %s, committing and stopping", signal.Signals(signum).name)
        stop.set()

    restore = on_stop_signals(on_signal)
    try:
        logger.info(
            "waddle-consume: %s on %s%s",
            ", ".join(c.name for c in consumers),
            root,
            " (until caught up)" if once else "",
        )
        for thread in threads:
            thread.start()
        for thread in threads:
            signals.join(thread)
    finally:
        restore()
        if progress is not None:
            progress.close()
    return 1 if errors else 0


def _run(
    consumer: Consumer,
    root: Path,
    stop: threading.Event,
    errors: list[BaseException],
    **options: Any,
) -> None:
    try:
        committed = run_consumer(consumer, root, stop, retry=Retry(), **options)
    except WaddleError as exc:
        logger.error("waddle-consume: consumer %s stopped: %s", consumer.name, exc)
        errors.append(exc)
        stop.set()
    except Exception as exc:
        logger.exception("waddle-consume: consumer %s failed", consumer.name)
        errors.append(exc)
        stop.set()
    else:
        logger.info(
            "waddle-consume: %s stopped, offsets of %d streams committed",
            consumer.name,
            len(committed),
        )

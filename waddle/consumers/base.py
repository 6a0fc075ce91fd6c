"""The consumer protocol and the one run loop every consumer is driven by.

A consumer is an object with a ``name``, a ``durable`` flag and four methods::

    start(offsets) -> offsets   open; say where to resume (its own store wins)
    handle(batches)             take events (grouped by stream, in seq order)
    commit() -> offsets         make what was handled durable; the offsets now durable
    close()                     release everything; discard what was not committed

``run_consumer`` drives one: it takes the consumer's lock (durable consumers), starts it,
tails the log through ``LogReader.follow`` (or catches up once), hands every round of
batches to ``handle``, commits whenever it has caught up with the log (and every second
while it works through a backlog: fewer, larger transactions), publishes the
committed offsets to ``state/<name>.json`` (at most once a second, caught up or not: a
later idle moment publishes what is left; and at the end) and always closes it. With a
``Retry``, a transient failure (a full disk) closes the consumer and starts it again
after a backoff instead of ending the loop (``waddle.consumers.retry``).

Delivery: within one run of the loop every event reaches ``handle`` once, in seq order
per stream (no order across streams); a restart resumes from what ``start`` returned.
So what survives a crash is the consumer's doing: one that stores its offsets with its
data in one step (``commit``) is exactly-once, one that stores them apart is
at-least-once. ``Consumer.fresh`` drops events at or below the last seq taken, so a
replayed batch is harmless. Backpressure: the loop reads the next round only after
``handle`` (and ``commit``) returned; a slow consumer falls behind (its lag grows, see
``waddle consumers``) and never slows the producers or other consumers.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from waddle.consumers.registry import StateStore
from waddle.consumers.retry import Retry, is_transient
from waddle.event_types import Event
from waddle.eventlog.reader import DEFAULT_POLL_INTERVAL, Batch, LogReader, Offset
from waddle.signals import StopEvent

logger = logging.getLogger("waddle.consumers")

PUBLISH_INTERVAL_S = 1.0
COMMIT_INTERVAL_S = 1.0

Offsets = dict[str, Offset]


class Consumer:
    """Base class of consumers: the protocol, with the bookkeeping of offsets taken.

    Subclasses set ``name`` and ``durable`` and implement ``handle`` and ``commit``; they
    call ``self.fresh(batch)`` in ``handle`` to get only the events not taken yet.
    """

    name: str = "consumer"
    durable: bool = False

    @property
    def taken(self) -> Offsets:
        """Per stream, the offset after the last event handed to ``handle``."""
        try:
            return self._taken
        except AttributeError:
            self._taken: Offsets = {}
            return self._taken

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Open; return the offsets to resume from. ``offsets`` are the published ones."""
        self.taken.clear()
        self.taken.update(offsets)
        return dict(self.taken)

    def handle(self, batches: list[Batch]) -> None:
        raise NotImplementedError

    def commit(self) -> Offsets:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; what was handled but not committed is forgotten."""

    def unsettled(self) -> bool:
        """Whether ``commit`` may return more than it did last with nothing new handled
        (a relay's deferred stream, sent again once its wait is over): the loop then
        commits at idle moments too."""
        return False

    def finishing(self) -> None:
        """The run loop is about to end (a stop, or ``once`` caught up): its next commit
        is its last, so it must hold everything the consumer still has in flight."""

    def fresh(self, batch: Batch) -> list[Event]:
        """The events of ``batch`` above the last seq taken from its stream; advances it.

        A replayed or overlapping batch yields only what is new, so handling the same
        batch twice changes nothing. After a stream was created again (``restarted``) the
        position moves back to where the reader now is, and the last seq taken stays, so
        the reader does not start over at every round and nothing is taken twice
        (docs/log-format.md says why the new stream's first seqs are not taken).
        """
        current = self.taken.get(batch.stream, Offset())
        events = batch.events
        if events and events[0]["seq"] <= current.seq:
            events = [event for event in events if event["seq"] > current.seq]
        end = batch.offset
        if batch.restarted or (end.segment, end.position) > (current.segment, current.position):
            self.taken[batch.stream] = Offset(end.segment, end.position, max(end.seq, current.seq))
        return events


class Progress(Protocol):
    """What the run loop tells a progress display (see ``waddle.consumers.progress``)."""

    def begin(self, name: str, offsets: Mapping[str, Offset]) -> None: ...

    def advance(self, name: str, batches: list[Batch]) -> None: ...


class _Rhythm(StopEvent):
    """The stop signal handed to ``LogReader.follow``; its ``wait`` marks the idle moment.

    ``follow`` waits on its stop event only after a round that found nothing new: the
    consumer is caught up, so that is when to commit (``on_idle``). With ``once`` the
    first idle moment also ends the loop: ``--once`` reuses the one tail loop instead of
    growing a second one. The outer ``stop`` (a signal) still ends the loop early.
    """

    def __init__(self, stop: threading.Event, on_idle: Callable[[], object], *, once: bool) -> None:
        super().__init__()
        self._outer = stop
        self._on_idle = on_idle
        self._once = once
        self._caught_up = False

    def is_set(self) -> bool:
        return super().is_set() or self._outer.is_set()

    def wakes(self, wake: threading.Event) -> Callable[[], None]:
        """Set ``wake`` when this or the outer stop is set (the outer one: a signal)."""
        undo = super().wakes(wake)
        if not isinstance(self._outer, StopEvent):
            return undo
        undo_outer = self._outer.wakes(wake)

        def undo_both() -> None:
            undo()
            undo_outer()

        return undo_both

    def wait(self, timeout: float | None = None) -> bool:
        self._on_idle()
        if not self._caught_up:
            self._caught_up = True
            if _freeze_when_caught_up:
                gc.freeze()
        if self._once:
            self.set()
            return True
        return self._outer.wait(timeout)


_freeze_when_caught_up = False


def freeze_when_caught_up() -> None:
    """From now on, each consumer of this process freezes the heap (``gc.freeze``) the
    first time it catches up: a choice for a whole process, so the CLI's servers and
    daemons make it, not the library.

    A catch-up over thousands of runs leaves a large, long-lived heap (runs, streams,
    parked streams); each full collection walked all of it while a live run logged
    (60 to 150 ms with 10,000 finished runs: the live feed's p99). Frozen objects are
    still freed by reference counting; only a cycle among them that becomes garbage
    later is kept, so the cost is bounded by the heap at that moment."""
    global _freeze_when_caught_up
    _freeze_when_caught_up = True


class _Publisher:
    """Publishes a durable consumer's committed offsets, at most once per interval."""

    def __init__(self, registry: StateStore, consumer: Consumer) -> None:
        self.registry = registry
        self.consumer = consumer
        self.last: Offsets | None = None
        self.when = 0.0

    def __call__(self, offsets: Offsets, *, force: bool = False) -> bool:
        """Publish ``offsets`` if due; whether they are published now (False: later)."""
        if not self.consumer.durable or offsets == self.last:
            return True
        now = time.monotonic()
        if force or now - self.when >= PUBLISH_INTERVAL_S:
            self.registry.publish(self.consumer.name, offsets)
            self.last, self.when = dict(offsets), now
            return True
        return False


def run_consumer(
    consumer: Consumer,
    root: Path | str,
    stop: threading.Event,
    *,
    once: bool = False,
    interval: float = DEFAULT_POLL_INTERVAL,
    reader: LogReader | None = None,
    progress: Progress | None = None,
    ready: threading.Event | None = None,
    retry: Retry | None = None,
) -> Offsets:
    """Drive ``consumer`` until ``stop`` is set (or, with ``once``, the log is caught up).

    Returns the offsets committed last. An exception from the consumer or the reader
    ends the loop; the consumer is closed (dropping what it did not commit) and the
    exception propagates. With ``retry``, a transient one (``waddle.consumers.retry``)
    instead closes the consumer, waits and starts it again from what it committed,
    under the same lock, until ``stop``. ``ready`` is set once the consumer has started
    (or its first start failed transiently, with ``retry``).
    """
    reader = reader or LogReader(root)
    loop = _Loop(consumer, StateStore(reader.root), reader, stop, once, interval, progress, retry)
    durable = consumer.durable
    with loop.registry.lock(consumer.name) if durable else contextlib.nullcontext():
        while True:
            try:
                return loop.drive(ready)
            except Exception as exc:
                if retry is None or not is_transient(exc):
                    raise
                if ready is not None:
                    ready.set()
                if not retry.wait_out(consumer.name, exc, stop):
                    logger.warning(
                        "waddle: consumer %s stopped while failing; it resumes from its last "
                        "commit when started again",
                        consumer.name,
                    )
                    return loop.committed
                loop.progress = None  # the backlog was counted at the first start


@dataclass
class _Loop:
    """What one run of ``run_consumer`` drives, and the offsets it committed last."""

    consumer: Consumer
    registry: StateStore
    reader: LogReader
    stop: threading.Event
    once: bool
    interval: float
    progress: Progress | None
    retry: Retry | None
    committed: Offsets = field(default_factory=dict)

    def drive(self, ready: threading.Event | None) -> Offsets:
        """One pass: start the consumer, tail and commit, always close it."""
        consumer, progress = self.consumer, self.progress
        publish = _Publisher(self.registry, consumer)
        try:
            published = self.registry.load(consumer.name) if consumer.durable else {}
            self.committed = consumer.start(published)
            publish(self.committed, force=True)
            if ready is not None:
                ready.set()
            if progress is not None:
                progress.begin(consumer.name, self.committed)
            pending = unpublished = False
            last_commit = time.monotonic()

            def commit(*, publish_now: bool = False) -> None:
                # Called at every idle moment: with nothing new it must cost nothing,
                # not a comparison of every stream's offsets (thousands of finished runs).
                # A live tail is idle every poll: it publishes at most once a second, a
                # later idle moment publishes what is left.
                nonlocal pending, unpublished, last_commit
                if pending or consumer.unsettled():
                    self.committed = consumer.commit()
                    pending, unpublished, last_commit = False, True, time.monotonic()
                if unpublished:
                    unpublished = not publish(self.committed, force=publish_now)
                if self.retry is not None:
                    self.retry.succeeded(consumer.name)

            until = _Rhythm(self.stop, commit, once=self.once)
            for batches in self.reader.follow(self.committed, until, self.interval):
                consumer.handle(batches)
                pending = True
                if progress is not None:
                    progress.advance(consumer.name, batches)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    commit()
            consumer.finishing()
            commit(publish_now=True)
            if consumer.durable:
                self.registry.settle(consumer.name)  # the snapshot alone holds them all
            return self.committed
        finally:
            self.registry.release(consumer.name)
            consumer.close()


class ConsumerThread:
    """Runs one consumer in a background thread: the library form of the daemon.

    ``start`` returns once the consumer has started (so e.g. the DuckDB writer's
    ``cursor()`` works), or raises what its start raised; ``stop`` commits, closes and
    joins, and re-raises an error that ended the loop. Transient failures (a full disk)
    are retried with backoff (``waddle.consumers.retry``): ``failure`` says what is being
    waited out, None while the consumer works. An error that ends the loop is logged
    when it happens.
    """

    def __init__(
        self,
        consumer: Consumer,
        root: Path | str,
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        reader: LogReader | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.consumer = consumer
        self.root = Path(root)
        self.interval = interval
        self.reader = reader or LogReader(self.root)
        self.retry = retry or Retry()
        self.error: BaseException | None = None
        self._failed_start = False
        self._stop = StopEvent()  # setting it wakes a tail waiting with no stream live
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"waddle-consumer-{consumer.name}", daemon=True
        )

    def _run(self) -> None:
        try:
            run_consumer(
                self.consumer,
                self.root,
                self._stop,
                interval=self.interval,
                reader=self.reader,
                ready=self._ready,
                retry=self.retry,
            )
        except BaseException as exc:
            self.error = exc
            if not self._ready.is_set():
                self._failed_start = True
                self._ready.set()
            else:
                logger.error("waddle: consumer %s stopped", self.consumer.name, exc_info=exc)

    def start(self, timeout: float | None = 60.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)
        if self._failed_start and self.error is not None:
            self._thread.join()
            raise self.error

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def failure(self) -> BaseException | None:
        """The transient error being retried, or the one that ended the loop; else None."""
        return self.error or self.retry.failure

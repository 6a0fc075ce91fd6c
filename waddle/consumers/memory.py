"""The in-memory consumer: the reference implementation of the protocol and the test fake.

It keeps every event it committed in a ``MemoryStore``, with the offsets, both replaced
together at ``commit`` (so it is exactly-once for as long as the store lives). A store
outlives the consumer objects that write into it, as a database file would: a new
``MemoryConsumer`` on the same store resumes where the last commit left off. The lines
the reader skipped as bad are quarantined (``MemoryStore.quarantine``), committed with
the offsets, as the DuckDB writer does; every event that reaches it can be stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from waddle.consumers.base import Consumer, Offsets
from waddle.consumers.quarantine import Quarantined, bad_line, new_corruption
from waddle.event_types import Event
from waddle.eventlog.reader import Batch, Offset


@dataclass
class MemoryStore:
    """What a memory consumer has committed: events per stream, the offsets and the
    quarantined lines."""

    events: dict[str, list[Event]] = field(default_factory=dict)
    offsets: Offsets = field(default_factory=dict)
    quarantine: list[Quarantined] = field(default_factory=list)
    commits: int = 0


class MemoryConsumer(Consumer):
    """Keeps events in memory. Durable (registered, holds retention) only if asked.

    ``root``: the Waddle folder, to quarantine a bad line with its text and seq.
    """

    def __init__(
        self,
        store: MemoryStore | None = None,
        *,
        name: str = "memory",
        durable: bool = False,
        root: Path | None = None,
    ) -> None:
        self.store = store if store is not None else MemoryStore()
        self.name = name
        self.durable = durable
        self.root = root
        self._pending: dict[str, list[Event]] = {}
        self._set_aside: list[Quarantined] = []

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        """Resume from the store's offsets; ``offsets`` (the published ones) never lead."""
        self._drop()
        return super().start(self.store.offsets)

    def handle(self, batches: list[Batch]) -> None:
        for batch in batches:
            before = self.taken.get(batch.stream, Offset())
            events = self.fresh(batch)
            if events:
                self._pending.setdefault(batch.stream, []).extend(events)
            self._set_aside += (bad_line(item, self.root) for item in new_corruption(batch, before))

    def commit(self) -> Offsets:
        if self._pending or self._set_aside or self.taken != self.store.offsets:
            for stream, events in self._pending.items():
                self.store.events.setdefault(stream, []).extend(events)
            self.store.quarantine += self._set_aside
            self.store.offsets = dict(self.taken)
            self.store.commits += 1
            self._drop()
        return dict(self.store.offsets)

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        self._pending = {}
        self._set_aside = []

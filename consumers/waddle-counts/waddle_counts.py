"""waddle_counts: a Waddle consumer that counts events per stream and type."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from waddle.consumers.base import Consumer, Offsets
from waddle.eventlog.reader import Batch, Offset


class CountsConsumer(Consumer):
    """Counts events into <dir>/counts.json; counts and offsets are replaced together."""

    name = "counts"
    durable = True

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / "counts.json"
        self.counts: dict[str, dict[str, int]] = {}

    def start(self, offsets: Mapping[str, Offset]) -> Offsets:
        saved = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.counts = saved.get("counts", {})
        mine = {s: Offset.from_json(o) for s, o in saved.get("offsets", {}).items()}
        return super().start(mine)  # our own offsets win over the published ones

    def handle(self, batches: list[Batch]) -> None:
        for batch in batches:
            counts = self.counts.setdefault(batch.stream, {})
            for event in self.fresh(batch):
                counts[event["type"]] = counts.get(event["type"], 0) + 1

    def commit(self) -> Offsets:
        offsets = {s: o.to_json() for s, o in self.taken.items()}
        body = json.dumps({"counts": self.counts, "offsets": offsets}, indent=2)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(body)
        os.replace(temporary, self.path)  # atomic: old counts or new, never half
        return dict(self.taken)

    def close(self) -> None:
        self.counts = {}  # uncommitted counts are forgotten; start() reloads the file

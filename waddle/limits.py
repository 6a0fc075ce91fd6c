"""The limits of the log format: how deep a line may nest and the range of each integer.

They are the store's columns seen from the log: an event inside them can be stored, one
outside them is refused at the call (producer), at ``/ingest`` (400 naming the field) and
by every reader (a bad line, reported and quarantined). The codec
(``waddle.eventlog.record``) and the event models (``waddle.events``) both read them here,
so the two cannot drift.
"""

from __future__ import annotations

from waddle.ids import MAX_RANK

__all__ = ["INT64_MAX", "INT64_MIN", "INT_RANGES", "MAX_DEPTH", "MAX_RANK", "SEQ_RANGE"]

# Objects and arrays one line may nest, the event object counting as the first level.
# orjson itself stops at 255 when encoding and 1024 when decoding; this keeps well inside
# both and inside Python's recursion limit, for every consumer that walks a value.
MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Integer fields and the range of the column that stores each (docs/schema.md); ``seq``
# (every type) is in SEQ_RANGE. The models in waddle.events carry the same bounds.
SEQ_RANGE = (0, INT64_MAX)
INT_RANGES: dict[str, dict[str, tuple[int, int]]] = {
    "run": {"rank": (0, MAX_RANK)},
    "metrics": {"step": (0, INT64_MAX)},
    "artifact": {"size": (0, INT64_MAX)},
    "artifact_version": {
        "version": (0, INT64_MAX),
        "size": (0, INT64_MAX),
        "files": (0, INT64_MAX),
    },
    "artifact_use": {"version": (0, INT64_MAX)},
    "finish": {"exit_code": (INT64_MIN, INT64_MAX)},
}

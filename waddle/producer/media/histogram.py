"""``waddle.Histogram``: bins and counts, inline in the event (no blob)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from waddle.blobs.store import BlobStore
from waddle.errors import UsageError
from waddle.producer.media.base import Media

if TYPE_CHECKING:
    import numpy as np

MAX_BINS = 512  # wandb's limit too


class Histogram(Media):
    """A histogram of ``sequence`` in ``num_bins`` equal bins, or a ready ``np_histogram``
    (``(counts, edges)``, as ``numpy.histogram`` returns). Non-finite values are left out."""

    def __init__(
        self,
        sequence: Sequence[Any] | Any = None,
        np_histogram: tuple[Any, Any] | None = None,
        num_bins: int = 64,
    ) -> None:
        import numpy as np  # here: `import waddle` does not load numpy

        if np_histogram is not None:
            counts, edges = (np.asarray(part).ravel() for part in np_histogram)
            if len(edges) != len(counts) + 1 or len(counts) == 0:
                raise UsageError(
                    "np_histogram=(counts, edges) needs len(edges) == len(counts) + 1, got "
                    f"{len(counts)} counts and {len(edges)} edges"
                )
        elif sequence is not None:
            if type(num_bins) is not int or not 1 <= num_bins <= MAX_BINS:
                raise UsageError(f"num_bins must be an integer from 1 to {MAX_BINS}")
            values = as_floats(sequence)
            counts, edges = np.histogram(values[np.isfinite(values)], bins=num_bins)
        else:
            raise UsageError("Histogram() takes a sequence of values or np_histogram=")
        self.bins: list[float] = [float(edge) for edge in edges]
        self.histogram: list[int] = [int(count) for count in counts]

    def to_value(self, store: BlobStore | None = None) -> dict[str, Any]:
        return {"_type": "histogram", "bins": self.bins, "counts": self.histogram}

    def __repr__(self) -> str:
        return f"<waddle.Histogram {len(self.histogram)} bins>"


def as_floats(sequence: Any) -> np.ndarray:
    """Any sequence, numpy array or torch tensor as a flat float64 array."""
    import numpy as np  # here: `import waddle` does not load numpy

    if hasattr(sequence, "detach") and hasattr(sequence, "cpu"):
        sequence = sequence.detach().cpu().float().numpy()
    try:
        return np.asarray(sequence, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise UsageError("Histogram() takes a sequence of numbers") from exc

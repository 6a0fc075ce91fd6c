"""Shared tools of the log tests: draining a stream, the failure-mode fixture files, a
strategy for logged values, a strict spelling of values to compare, and a launcher for
real producer processes (``producer.py``)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st

from waddle.eventlog.reader import DEFAULT_BATCH_BYTES, Corruption, LogReader, Offset

HERE = Path(__file__).parent
PRODUCER = HERE / "producer.py"
FIXTURES = HERE / "fixtures"
START = Offset()


@dataclass
class Drained:
    """Everything a reader returned for one stream, and where it stopped."""

    events: list[dict[str, Any]]
    corrupt: list[Corruption]
    offset: Offset

    @property
    def seqs(self) -> list[int]:
        return [event["seq"] for event in self.events]


def drain(
    root: Path,
    stream: str,
    offset: Offset = START,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Drained:
    """Read ``stream`` from ``offset`` until a read brings nothing new."""
    reader = LogReader(root, batch_bytes=batch_bytes)
    result = Drained([], [], offset)
    for _ in range(1_000_000):
        batch = reader.read(stream, result.offset)
        result.events += batch.events
        result.corrupt += batch.corrupt
        if batch.offset == result.offset:
            assert not batch.events, "a batch with events must move the offset"
            return result
        result.offset = batch.offset
    raise AssertionError("the reader never stopped")


@pytest.fixture(scope="session")
def canonical() -> Callable[[Any], str]:
    """``json.dumps``: a spelling of values that tells NaN from None and True from 1."""
    return json.dumps


@pytest.fixture(scope="session")
def read_stream() -> Callable[..., Drained]:
    """``read_stream(root, stream, offset=Offset(), batch_bytes=...)`` drains a stream."""
    return drain


# What a reader must make of each failure-mode file when it is a stream's only segment:
# the seqs it returns, and the (0-based) complete lines it reports (a bad line is
# skipped; a line after missing seqs is kept).
EXPECTED = {
    "torn_tail": ([0, 1, 2], []),
    "bad_json_middle": ([0, 1, 3, 5], [2, 4]),
    "schema_break": ([0, 1, 2], list(range(1, 11))),
    "seq_gap": ([0, 1, 2, 7, 8], [3]),
    "empty": ([], []),
    "non_utf8": ([0, 2, 3], [1, 3, 4]),
    "duplicate_seq": ([0, 1, 2, 3, 4], []),
    "bare_cr": ([0, 1, 2, 3], []),
}


@dataclass(frozen=True)
class LogFixture:
    """One file of ``fixtures/`` and what it should read as."""

    name: str
    data: bytes
    seqs: list[int]
    bad_lines: list[int]

    @property
    def complete(self) -> bytes:
        """The bytes through the last newline: what survives a torn-tail repair."""
        return self.data[: self.data.rfind(b"\n") + 1]

    @property
    def bad_offsets(self) -> list[int]:
        starts = [0]
        for line in self.complete.split(b"\n")[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        return [starts[index] for index in self.bad_lines]

    @property
    def torn_offset(self) -> int | None:
        """Where the torn final line starts, or None when the file ends with a newline."""
        return len(self.complete) if self.complete != self.data else None

    @property
    def last_seq(self) -> int | None:
        return max(self.seqs, default=None)


@pytest.fixture(params=sorted(EXPECTED))
def log_fixture(request: pytest.FixtureRequest) -> LogFixture:
    """Each failure-mode file in turn."""
    seqs, bad_lines = EXPECTED[request.param]
    data = (FIXTURES / f"{request.param}.ndjson").read_bytes()
    return LogFixture(request.param, data, seqs, bad_lines)


NON_FINITE_NAMES = ("NaN", "Infinity", "-Infinity")
_text = st.characters(exclude_categories=("Cs",))
_keys = st.text(_text, max_size=12)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(_text, max_size=16).filter(lambda s: s not in NON_FINITE_NAMES)
)
METRIC_DATA = st.dictionaries(
    _keys,
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
        max_leaves=16,
    ),
    max_size=8,
)


@pytest.fixture(scope="session")
def metric_data() -> st.SearchStrategy[dict[str, Any]]:
    """Any dict a user may log: NaN and infinities, unicode keys, ints, bools, nesting.

    Strings spelled like non-finite numbers are left out: they come back as floats.
    """
    return METRIC_DATA


@pytest.fixture(scope="session")
def payload() -> Callable[[int], dict[str, Any]]:
    """The values ``producer.py loop`` logs at a step."""
    return runpy.run_path(str(PRODUCER))["payload"]


@pytest.fixture
def spawn() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``spawn(mode, *args, **popen_kwargs)`` starts ``producer.py``; all are reaped after."""
    started: list[subprocess.Popen[str]] = []

    def start(mode: str, *args: object, **popen_kwargs: Any) -> subprocess.Popen[str]:
        command = [sys.executable, str(PRODUCER), mode, *map(str, args)]
        proc = subprocess.Popen(command, text=True, **popen_kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()

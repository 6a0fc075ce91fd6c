"""Shared helpers of the tests: the current Waddle folder, reading a log back, polling,
running the scripts under ``tests/scripts`` as real processes, and a fake NVML.

Every test gets the autouse fixture ``isolated_waddle`` from ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from waddle.eventlog.reader import LogReader, Offset
from waddle.eventlog.segment import list_segments, log_dir, segment_name

TESTS = Path(__file__).resolve().parent
SCRIPTS = TESTS / "scripts"
SCHEMAS = TESTS.parent / "schemas"
SUBPROCESS_TIMEOUT_S = 30.0


def waddle_dir() -> Path:
    """The Waddle folder of the current test (set by ``tests/conftest.py``)."""
    return Path(os.environ["WADDLE_DIR"])


def streams(root: Path | None = None) -> list[str]:
    return LogReader(root or waddle_dir()).streams()


def only_stream(root: Path | None = None) -> str:
    found = streams(root)
    assert len(found) == 1, f"expected one stream under {root or waddle_dir()}, found {found}"
    return found[0]


def read_events(root: Path | None = None, stream: str | None = None) -> list[dict[str, Any]]:
    """Every event of ``stream`` (the only stream when None), read with LogReader.

    Fails the test when the reader reports a corrupt line: producer output must be clean.
    """
    root = root or waddle_dir()
    stream = stream or only_stream(root)
    reader = LogReader(root)
    offset = Offset()
    events: list[dict[str, Any]] = []
    while True:
        batch = reader.read(stream, offset)
        assert not batch.corrupt, f"corrupt lines in stream {stream!r}: {batch.corrupt}"
        if batch.offset == offset:
            return events
        events += batch.events
        offset = batch.offset


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


def raw_log(root: Path | None = None, stream: str | None = None) -> bytes:
    """The bytes of a stream's segments, oldest first, as they are on disk."""
    root = root or waddle_dir()
    stream_dir = log_dir(root) / (stream or only_stream(root))
    return b"".join(
        (stream_dir / segment_name(first)).read_bytes() for first in list_segments(stream_dir)
    )


def raw_events(data: bytes) -> list[dict[str, Any]]:
    """Parse a log with orjson alone (an independent reader): complete lines only."""
    assert data.endswith(b"\n"), f"the log ends with a torn line: {data[-80:]!r}"
    return [orjson.loads(line) for line in data.splitlines()]


def ending(events: list[dict[str, Any]]) -> tuple[str, int | None]:
    """The (status, exit_code) of the finish event that must end ``events``."""
    last = events[-1] if events else {"type": "nothing"}
    assert last["type"] == "finish", f"the log ends with {last} instead of a finish event"
    return last["status"], last["exit_code"]


def assert_gapless(events: list[dict[str, Any]], first: int = 0) -> None:
    seqs = [event["seq"] for event in events]
    assert seqs == list(range(first, first + len(events))), f"seqs are not gapless: {seqs}"


def child_env(*, drop: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The test's environment for a child process, unbuffered, with ``extra`` set."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def script_command(script: str | Path, *args: str) -> list[str]:
    path = script if isinstance(script, Path) else SCRIPTS / script
    return [sys.executable, str(path), *args]


def run_script(
    script: str | Path,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = SUBPROCESS_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """Run a script to the end (bounded by ``timeout``) and capture its output."""
    return subprocess.run(
        script_command(script, *args),
        cwd=cwd,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_script(
    script: str | Path, *args: str, env: dict[str, str] | None = None, stdin: bool = False
) -> subprocess.Popen[bytes]:
    """Start a script whose stdout is read line by line (unbuffered, see ``wait_for_line``)."""
    return subprocess.Popen(
        script_command(script, *args),
        env=env or child_env(),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )


def wait_for_line(
    proc: subprocess.Popen[bytes], expected: str, timeout: float = SUBPROCESS_TIMEOUT_S
) -> None:
    """Read the child's stdout until a line equal to ``expected``; fail on exit or timeout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            pytest.fail(f"no {expected!r} line from the child within {timeout}s; got {seen}")
        ready, _, _ = select.select([proc.stdout], [], [], remaining)
        if not ready:
            continue
        line = proc.stdout.readline()
        if not line:
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"the child exited before {expected!r}; stdout {seen}, stderr {stderr}")
        if line.decode().strip() == expected:
            return
        seen.append(line)


def finish_child(
    proc: subprocess.Popen[bytes], timeout: float = SUBPROCESS_TIMEOUT_S
) -> tuple[int, str, str]:
    """Wait for the child (killing it on timeout, which fails the test); rc, stdout, stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the child did not exit within {timeout}s (a deadlock?)")
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


def assert_valid_by_schemas(data: bytes) -> int:
    """Every line of ``data`` validates against event.schema.json and its type's schema.

    Uses the ``jsonschema`` package, independent of the pydantic models. Returns the count.
    """
    from jsonschema import Draft202012Validator

    any_event = Draft202012Validator(load_schema("event.schema.json"))
    validators: dict[str, Draft202012Validator] = {}
    events = raw_events(data)
    for number, event in enumerate(events, 1):
        kind = event.get("type")
        if kind not in validators:
            validators[kind] = Draft202012Validator(load_schema(f"{kind}.schema.json"))
        for validator in (any_event, validators[kind]):
            errors = [error.message for error in validator.iter_errors(event)]
            assert not errors, f"line {number} ({kind}) breaks the schema: {errors}"
    return len(events)


class FakeNvmlError(Exception):
    """Stands in for pynvml.NVMLError."""


class FakeNvml:
    """The part of the pynvml module that waddle.producer.gpu uses, for ``devices`` fake GPUs.

    ``failing`` names readings (``utilization``, ``memory``, ``temperature``, ``power``)
    that raise NVMLError, as a device that does not support them would.
    """

    NVMLError = FakeNvmlError
    MEMORY_TOTAL = 80 * 2**30
    MEMORY_USED = 3 * 2**30

    def __init__(self, devices: int = 2, failing: tuple[str, ...] = ()) -> None:
        self.devices = devices
        self.failing = set(failing)
        self.initialised = False

    def _read(self, what: str, value: Any) -> Any:
        if what in self.failing:
            raise FakeNvmlError(f"{what} not supported")
        return value

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlDeviceGetCount(self) -> int:
        return self.devices

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return f"Fake GPU {handle}".encode()  # old pynvml returns bytes

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return f"GPU-{handle:04d}"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        from types import SimpleNamespace

        used = self.MEMORY_USED + handle
        return self._read("memory", SimpleNamespace(total=self.MEMORY_TOTAL, used=used))

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        from types import SimpleNamespace

        return self._read("utilization", SimpleNamespace(gpu=40 + handle, memory=10))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return self._read("temperature", 60 + handle)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._read("power", 250_500 + handle)  # milliwatts

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"


def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)

"""SystemSampler: psutil and NVML probes, a failing probe, the thread, and init's events."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

import psutil
import pytest

import waddle
from tests.helpers import (
    FakeNvml,
    ending,
    eventually,
    of_type,
    read_events,
)
from waddle.producer.gpu import Nvml
from waddle.producer.system import SystemSampler

PSUTIL_KEYS = {
    "cpu/percent",
    "memory/used",
    "memory/percent",
    "process/rss",
    "process/cpu_percent",
    "process/threads",
}
RATE_KEYS = {
    "disk/read_bytes_per_s",
    "disk/write_bytes_per_s",
    "network/recv_bytes_per_s",
    "network/sent_bytes_per_s",
}


def sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "waddle-system"]


def test_sample_returns_the_psutil_readings() -> None:
    sampler = SystemSampler(lambda data: None)
    first = sampler.sample()
    assert set(first) == PSUTIL_KEYS
    assert all(type(value) is float for value in first.values())
    assert 0.0 <= first["memory/percent"] <= 100.0
    assert first["process/rss"] > 0
    assert first["process/threads"] >= 1
    second = sampler.sample()  # rates need two readings
    expected = set(PSUTIL_KEYS)
    if psutil.disk_io_counters() is not None:
        expected |= {"disk/read_bytes_per_s", "disk/write_bytes_per_s"}
    if psutil.net_io_counters() is not None:
        expected |= {"network/recv_bytes_per_s", "network/sent_bytes_per_s"}
    assert set(second) == expected
    assert all(second[key] >= 0 for key in expected & RATE_KEYS)


def test_gpu_readings_join_the_sample() -> None:
    nvml = Nvml(FakeNvml(devices=2, failing=("power",)))
    values = SystemSampler(lambda data: None, nvml=nvml).sample()
    gpu = {k: v for k, v in values.items() if k.startswith("gpu/")}
    assert gpu == {
        "gpu/0/util_percent": 40.0,
        "gpu/0/memory_used": float(FakeNvml.MEMORY_USED),
        "gpu/0/temperature_c": 60.0,
        "gpu/1/util_percent": 41.0,
        "gpu/1/memory_used": float(FakeNvml.MEMORY_USED + 1),
        "gpu/1/temperature_c": 61.0,
    }
    assert set(values) >= PSUTIL_KEYS


def test_a_failing_probe_is_warned_once_and_the_thread_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise psutil.Error("probe broken")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    samples: list[dict[str, float]] = []
    nvml = Nvml(FakeNvml(devices=1))
    sampler = SystemSampler(samples.append, interval=0.01, nvml=nvml)
    with caplog.at_level(logging.WARNING, logger="waddle"):
        sampler.start()
        eventually(lambda: len(samples) >= 5)
        assert sampler_threads()
        sampler.stop()
    assert not sampler_threads()
    assert all(sample == nvml.sample() for sample in samples)  # psutil left out, GPU kept
    warnings = [r.getMessage() for r in caplog.records if r.name == "waddle"]
    assert len(warnings) == 1
    assert "psutil" in warnings[0]


def test_init_with_system_metrics_writes_system_events(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(devices=1)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    run = waddle.init(system_metrics=True, system_interval=0.05)
    eventually(lambda: len(of_type(read_events(), "system")) >= 3)
    run.finish()
    events = read_events()
    assert events[0]["context"]["gpus"] == Nvml(fake).describe()
    systems = of_type(events, "system")
    assert all(PSUTIL_KEYS | set(Nvml(fake).sample()) <= set(e["data"]) for e in systems)
    assert ending(events) == ("finished", None)
    assert not sampler_threads()
    time.sleep(0.15)
    assert len(of_type(read_events(), "system")) == len(systems)


def test_init_without_system_metrics_writes_none() -> None:
    run = waddle.init(system_metrics=False)
    time.sleep(0.05)
    run.finish()
    assert of_type(read_events(), "system") == []
    assert not sampler_threads()

"""NVML through a fake pynvml module, and the real one on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import FakeNvml, FakeNvmlError
from waddle.producer.gpu import Nvml, open_nvml


def test_describe_names_every_device() -> None:
    assert Nvml(FakeNvml(devices=2)).describe() == [
        {
            "index": index,
            "name": f"Fake GPU {index}",
            "uuid": f"GPU-{index:04d}",
            "memory_total": FakeNvml.MEMORY_TOTAL,
            "driver": "550.54.15",
        }
        for index in range(2)
    ]


def test_sample_reads_every_device_with_flat_keys() -> None:
    assert Nvml(FakeNvml(devices=2)).sample() == {
        "gpu/0/util_percent": 40.0,
        "gpu/0/memory_used": float(FakeNvml.MEMORY_USED),
        "gpu/0/temperature_c": 60.0,
        "gpu/0/power_w": 250.5,
        "gpu/1/util_percent": 41.0,
        "gpu/1/memory_used": float(FakeNvml.MEMORY_USED + 1),
        "gpu/1/temperature_c": 61.0,
        "gpu/1/power_w": 250.501,
    }


def test_a_reading_that_raises_nvml_error_is_left_out() -> None:
    values = Nvml(FakeNvml(devices=1, failing=("temperature", "power"))).sample()
    assert values == {"gpu/0/util_percent": 40.0, "gpu/0/memory_used": float(FakeNvml.MEMORY_USED)}


def test_open_nvml_uses_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeNvml(devices=3)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    nvml = open_nvml()
    assert nvml is not None
    assert fake.initialised
    assert nvml.handles == [0, 1, 2]


def test_open_nvml_without_devices_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(devices=0))
    assert open_nvml() is None


def test_open_nvml_when_the_driver_is_missing_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDriver(FakeNvml):
        def nvmlInit(self) -> None:
            raise FakeNvmlError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", NoDriver())
    assert open_nvml() is None


def test_open_nvml_without_the_package_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    assert open_nvml() is None


def test_open_nvml_on_this_machine() -> None:
    """None without an NVIDIA driver; with one, every device is described and sampled."""
    nvml = open_nvml()
    if not Path("/dev/nvidiactl").exists():
        assert nvml is None
        return
    assert nvml is not None
    devices = nvml.describe()
    assert devices
    assert all(d["memory_total"] > 0 and d["uuid"].startswith("GPU-") for d in devices)
    assert {f"gpu/{d['index']}/memory_used" for d in devices} <= set(nvml.sample())

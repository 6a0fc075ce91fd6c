"""NVIDIA GPUs through NVML (nvidia-ml-py), for the run context and system metrics.

Absent silently: no package, no driver or no device all mean "no GPUs", never an error.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("waddle")


class Nvml:
    """An initialised NVML with its device handles."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.handles = [
            nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())
        ]

    def describe(self) -> list[dict[str, Any]]:
        """Name, memory and uuid of each device, for the run context."""
        nvml = self.nvml
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        return [
            {
                "index": index,
                "name": _text(nvml.nvmlDeviceGetName(handle)),
                "uuid": _text(nvml.nvmlDeviceGetUUID(handle)),
                "memory_total": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                "driver": driver,
            }
            for index, handle in enumerate(self.handles)
        ]

    def sample(self) -> dict[str, float]:
        """Utilisation, memory, temperature and power of each device, flat keys.

        A reading a device does not support (or that fails now) is left out.
        """
        nvml = self.nvml
        values: dict[str, float] = {}
        for index, handle in enumerate(self.handles):
            prefix = f"gpu/{index}/"
            for key, read in (
                ("util_percent", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                ("memory_used", lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used),
                ("temperature_c", lambda h: nvml.nvmlDeviceGetTemperature(h, 0)),
                ("power_w", lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ):
                try:
                    values[prefix + key] = float(read(handle))
                except nvml.NVMLError:
                    continue  # a reading this device does not support
        return values


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def open_nvml() -> Nvml | None:
    """NVML ready to use, or None where there is no package, driver or device."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        nvml = Nvml(pynvml)
    except pynvml.NVMLError as exc:
        logger.debug("waddle: no NVML (%s); GPU metrics are off", exc)
        return None
    return nvml if nvml.handles else None

"""System metrics: a daemon thread that samples psutil (and NVML) into ``system`` events.

Keys are flat and grouped by prefix: ``cpu/percent``, ``memory/used``,
``disk/read_bytes_per_s``, ``network/sent_bytes_per_s``, ``process/rss``,
``gpu/<i>/util_percent``. A probe that fails is warned about once and left out; the
thread never stops the run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from waddle.producer.gpu import Nvml

logger = logging.getLogger("waddle")

DEFAULT_INTERVAL_S = 10.0


class SystemSampler:
    """Samples every ``interval`` seconds and hands the readings to ``emit``."""

    def __init__(
        self,
        emit: Callable[[dict[str, Any]], object],
        interval: float = DEFAULT_INTERVAL_S,
        nvml: Nvml | None = None,
    ) -> None:
        self.emit = emit
        self.interval = interval
        self.nvml = nvml
        self._process = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._failed: set[str] = set()
        self._last_io: tuple[float, Any, Any] | None = None
        self._thread = threading.Thread(target=self._loop, name="waddle-system", daemon=True)

    def start(self) -> None:
        psutil.cpu_percent(interval=None)  # the first reading of cpu_percent is meaningless
        self._process.cpu_percent(interval=None)
        self._last_io = (time.monotonic(), _disk_io(), _net_io())
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.interval + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.emit(self.sample())

    def sample(self) -> dict[str, float]:
        """One reading of every probe that works."""
        values: dict[str, float] = {}
        for name, probe in (("psutil", self._psutil), ("nvml", self._nvml)):
            try:
                values.update(probe())
            except (psutil.Error, OSError, RuntimeError) as exc:
                self._warn_once(name, exc)
            except Exception as exc:
                if self.nvml is None or not isinstance(exc, self.nvml.nvml.NVMLError):
                    raise
                self._warn_once(name, exc)
        return values

    def _warn_once(self, name: str, exc: BaseException) -> None:
        if name not in self._failed:
            self._failed.add(name)
            logger.warning("waddle: system metrics from %s failed (%s); left out", name, exc)

    def _psutil(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        values = {
            "cpu/percent": psutil.cpu_percent(interval=None),
            "memory/used": float(memory.used),
            "memory/percent": memory.percent,
            "process/rss": float(self._process.memory_info().rss),
            "process/cpu_percent": self._process.cpu_percent(interval=None),
            "process/threads": float(self._process.num_threads()),
        }
        now, disk, net = time.monotonic(), _disk_io(), _net_io()
        if self._last_io is not None:
            then, old_disk, old_net = self._last_io
            elapsed = max(now - then, 1e-9)
            for keys, new, old in (
                (("disk/read_bytes_per_s", "disk/write_bytes_per_s"), disk, old_disk),
                (("network/recv_bytes_per_s", "network/sent_bytes_per_s"), net, old_net),
            ):
                if new is not None and old is not None:
                    for key, now_count, old_count in zip(keys, new, old, strict=True):
                        values[key] = (now_count - old_count) / elapsed
        self._last_io = (now, disk, net)
        return values

    def _nvml(self) -> dict[str, float]:
        return self.nvml.sample() if self.nvml is not None else {}


def _disk_io() -> tuple[int, int] | None:
    counters = psutil.disk_io_counters()
    return (counters.read_bytes, counters.write_bytes) if counters else None


def _net_io() -> tuple[int, int] | None:
    counters = psutil.net_io_counters()
    return (counters.bytes_recv, counters.bytes_sent) if counters else None

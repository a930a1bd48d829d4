"""Host telemetry: CPU utilisation, load, memory, swap, uptime and process count, as one
``Sample(kind="host")`` per collection."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from collectors.records import Record, Sample, Value

VALUE_NAMES = (
    "cpu_utilization_ratio",
    "cpu_count",
    "load1",
    "load5",
    "load15",
    "memory_total_bytes",
    "memory_available_bytes",
    "memory_used_bytes",
    "swap_total_bytes",
    "swap_used_bytes",
    "uptime_seconds",
    "boot_time",
    "processes",
)
# Time the CPU was not doing work. Linux also counts guest time inside user/nice, so it is dropped
# from the total to avoid counting it twice (as psutil.cpu_percent does).
_IDLE_FIELDS = ("idle", "iowait")
_DOUBLE_COUNTED_FIELDS = ("guest", "guest_nice")


def cpu_busy_and_total(times: Any) -> tuple[float, float]:
    """(busy, total) seconds from a psutil ``scputimes``-like named tuple."""
    fields = times._asdict()
    total = sum(fields.values()) - sum(fields.get(f, 0.0) for f in _DOUBLE_COUNTED_FIELDS)
    return total - sum(fields.get(f, 0.0) for f in _IDLE_FIELDS), total


class HostCollector:
    """Whole-host counters. ``cpu_utilization_ratio`` is busy/total CPU time between this
    collection and the previous one (None on the first, or if the counters went backwards)."""

    name = "host"

    def __init__(
        self,
        psutil_module: Any = None,
        procfs: str = "/proc",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._procfs = procfs
        self._clock = clock
        self._prev_cpu: tuple[float, float] | None = None
        self._boot_time: float | None = None

    def check(self) -> bool:
        try:
            self._psutil.virtual_memory()
        except (OSError, RuntimeError, AttributeError):
            return False
        return True

    def collect(self) -> list[Record]:
        now = self._clock()
        values: dict[str, Value] = dict.fromkeys(VALUE_NAMES)
        values["cpu_utilization_ratio"] = self._cpu_ratio()
        values["cpu_count"] = self._psutil.cpu_count(logical=True)
        try:
            values["load1"], values["load5"], values["load15"] = self._psutil.getloadavg()
        except (OSError, AttributeError):
            pass
        mem = self._psutil.virtual_memory()
        values["memory_total_bytes"] = mem.total
        values["memory_available_bytes"] = mem.available
        values["memory_used_bytes"] = mem.used
        swap = self._swap()
        if swap is not None:
            values["swap_total_bytes"], values["swap_used_bytes"] = swap
        if self._boot_time is None:  # the kernel's btime: fixed until the next boot
            self._boot_time = self._psutil.boot_time()
        boot_time = self._boot_time
        values["boot_time"] = boot_time
        values["uptime_seconds"] = self._uptime(now, boot_time)
        try:
            values["processes"] = len(self._psutil.pids())
        except OSError:
            pass
        return [Sample(kind="host", ts=now, key={}, values=values)]

    def _swap(self) -> tuple[int, int] | None:
        """(total, used) swap bytes. From SwapTotal and SwapFree of <procfs>/meminfo, as
        ``psutil.swap_memory`` computes them (used = total - free), without the scan of
        /proc/vmstat it also makes for page-in/out counts this collector does not report; from
        ``psutil.swap_memory()`` when the file or those lines are missing."""
        try:
            with open(os.path.join(self._procfs, "meminfo"), "rb") as f:
                text = f.read()
            total = free = None
            start = text.find(b"\nSwapTotal:")
            if start >= 0:
                total = int(text[start + 11:text.index(b"\n", start + 1)].split()[0]) * 1024
            start = text.find(b"\nSwapFree:")
            if start >= 0:
                free = int(text[start + 10:text.index(b"\n", start + 1)].split()[0]) * 1024
            if total is not None and free is not None:
                return total, total - free
        except (OSError, ValueError, IndexError):
            pass
        try:
            swap = self._psutil.swap_memory()
        except (OSError, RuntimeError):
            return None
        return swap.total, swap.used

    def _cpu_ratio(self) -> float | None:
        busy, total = cpu_busy_and_total(self._psutil.cpu_times(percpu=False))
        prev, self._prev_cpu = self._prev_cpu, (busy, total)
        if prev is None:
            return None
        d_busy, d_total = busy - prev[0], total - prev[1]
        if d_total <= 0 or d_busy < 0:
            return None
        return min(1.0, d_busy / d_total)

    def _uptime(self, now: float, boot_time: float | None) -> float | None:
        """Seconds since boot from <procfs>/uptime; else from boot_time and the clock."""
        try:
            with open(os.path.join(self._procfs, "uptime"), encoding="ascii") as f:
                return float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
        return now - boot_time if boot_time else None

    def close(self) -> None:
        self._prev_cpu = None
        self._boot_time = None

"""Host telemetry: CPU utilisation, load, memory, swap, uptime and process count, as one
``Sample(kind="host")`` per collection."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from collectors.procfs import is_real_psutil, meminfo_bytes, read_all, read_small
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
# The fields of the "cpu" line of /proc/stat, in order, as psutil.cpu_times() names them.
_STAT_CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal", "guest",
                    "guest_nice")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_busy_and_total(fields: Mapping[str, float]) -> tuple[float, float]:
    """(busy, total) seconds from CPU times by name, as psutil's ``scputimes`` names them."""
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
        direct: bool | None = None,
    ) -> None:
        """``direct``: read <procfs> files straight rather than through psutil, falling back to psutil
        for any file that is missing or unparsable. None (the default) means yes when
        ``psutil_module`` is psutil itself; an injected stand-in stays the source of everything
        psutil would answer."""
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._direct = is_real_psutil(psutil_module) if direct is None else direct
        self._procfs = procfs
        self._stat_path = os.path.join(procfs, "stat")
        self._meminfo_path = os.path.join(procfs, "meminfo")
        self._uptime_path = os.path.join(procfs, "uptime")
        self._procfs_bytes = os.fsencode(procfs)
        self._clock = clock
        self._prev_cpu: tuple[float, float] | None = None
        self._boot_time: float | None = None

    def check(self) -> bool:
        try:
            self._psutil.virtual_memory()
        except (OSError, RuntimeError, AttributeError):
            return False
        return True

    # What each collection reads when ``direct`` (see __init__): /proc/stat's first line, /proc/meminfo
    # once for memory and swap, /proc/uptime and the /proc listing, instead of psutil.cpu_times(),
    # virtual_memory() (a dict of all ~50 meminfo lines), swap_memory() and pids() (a sorted list of
    # ints). psutil.cpu_count() and getloadavg() are kept: each is one libc call.

    def collect(self) -> list[Record]:
        now = self._clock()
        values: dict[str, Value] = dict.fromkeys(VALUE_NAMES)
        values["cpu_utilization_ratio"] = self._cpu_ratio()
        values["cpu_count"] = self._psutil.cpu_count(logical=True)
        try:
            values["load1"], values["load5"], values["load15"] = self._psutil.getloadavg()
        except (OSError, AttributeError):
            pass
        meminfo = read_all(self._meminfo_path) if self._direct else None
        mem = self._memory(meminfo)
        if mem is None:
            vm = self._psutil.virtual_memory()
            mem = vm.total, vm.available, vm.used
        values["memory_total_bytes"], values["memory_available_bytes"], values["memory_used_bytes"] = mem
        swap = self._swap(meminfo)
        if swap is not None:
            values["swap_total_bytes"], values["swap_used_bytes"] = swap
        if self._boot_time is None:  # the kernel's btime: fixed until the next boot
            self._boot_time = self._psutil.boot_time()
        boot_time = self._boot_time
        values["boot_time"] = boot_time
        values["uptime_seconds"] = self._uptime(now, boot_time)
        values["processes"] = self._processes()
        return [Sample(kind="host", ts=now, key={}, values=values)]

    def _processes(self) -> int | None:
        """How many processes: the numeric entries of <procfs> (what psutil.pids() lists, without
        turning each into an int and sorting them)."""
        if self._direct:
            try:
                return sum(map(bytes.isdigit, os.listdir(self._procfs_bytes)))
            except OSError:
                pass
        try:
            return len(self._psutil.pids())
        except OSError:
            return None

    @staticmethod
    def _memory(meminfo: bytes | None) -> tuple[int, int, int] | None:
        """(total, available, used) bytes from /proc/meminfo text, computed as psutil.virtual_memory()
        does (used = total - available; available is MemFree when MemAvailable exceeds MemTotal, as
        in some containers). None when psutil would have to estimate MemAvailable (a missing or zero
        line: kernels before 3.14, a kernel bug) or a line is missing: psutil answers then."""
        if meminfo is None:
            return None
        total = meminfo_bytes(meminfo, b"MemTotal:")
        free = meminfo_bytes(meminfo, b"MemFree:")
        avail = meminfo_bytes(meminfo, b"MemAvailable:")
        if total is None or free is None or not avail:
            return None
        if avail > total:
            avail = free
        return total, avail, total - avail

    def _swap(self, meminfo: bytes | None) -> tuple[int, int] | None:
        """(total, used) swap bytes. From SwapTotal and SwapFree of the <procfs>/meminfo text
        ``collect`` read for memory too (when reading /proc directly), as ``psutil.swap_memory``
        computes them (used = total - free), without the scan of /proc/vmstat it also makes for
        page-in/out counts this collector does not report; otherwise, or when the text or those
        lines are missing, from ``psutil.swap_memory()``."""
        if meminfo is not None:
            total = meminfo_bytes(meminfo, b"SwapTotal:")
            free = meminfo_bytes(meminfo, b"SwapFree:")
            if total is not None and free is not None:
                return total, total - free
        try:
            swap = self._psutil.swap_memory()
        except (OSError, RuntimeError):
            return None
        return swap.total, swap.used

    def _cpu_busy_and_total(self) -> tuple[float, float]:
        """As ``cpu_busy_and_total(psutil.cpu_times())``, from the first line of <procfs>/stat when
        ``direct`` and it has psutil's ten fields (every kernel since 2.6.33)."""
        if self._direct:
            head = read_small(self._stat_path)
            if head is not None:
                fields = head[:head.find(b"\n")].split()
                if len(fields) > len(_STAT_CPU_FIELDS) and fields[0] == b"cpu":
                    try:  # the fields in psutil's order, so the sums match its to the last bit
                        times = [float(x) / _CLOCK_TICKS for x in fields[1:len(_STAT_CPU_FIELDS) + 1]]
                    except ValueError:
                        pass
                    else:
                        return cpu_busy_and_total(dict(zip(_STAT_CPU_FIELDS, times, strict=True)))
        return cpu_busy_and_total(self._psutil.cpu_times(percpu=False)._asdict())

    def _cpu_ratio(self) -> float | None:
        busy, total = self._cpu_busy_and_total()
        prev, self._prev_cpu = self._prev_cpu, (busy, total)
        if prev is None:
            return None
        d_busy, d_total = busy - prev[0], total - prev[1]
        if d_total <= 0 or d_busy < 0:
            return None
        return min(1.0, d_busy / d_total)

    def _uptime(self, now: float, boot_time: float | None) -> float | None:
        """Seconds since boot from <procfs>/uptime; else from boot_time and the clock."""
        text = read_small(self._uptime_path)
        if text is not None:
            try:
                return float(text.split()[0])
            except (ValueError, IndexError):
                pass
        return now - boot_time if boot_time else None

    def close(self) -> None:
        self._prev_cpu = None
        self._boot_time = None

"""HostCollector against a fixture procfs tree and a fake psutil, and against this machine."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from collectors.host import HostCollector
from collectors.records import Collector

# Live checks.
LIVE_UPTIME_TOLERANCE_SECONDS = 5.0
LIVE_PROCESS_COUNT_TOLERANCE = 50  # processes started or reaped between two listings
LIVE_MEMORY_AVAILABLE_RELATIVE_TOLERANCE = 0.05

PROCFS = Path(__file__).parent / "data" / "proc"

scputimes = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")
svmem = namedtuple("svmem", "total available percent used free")
sswap = namedtuple("sswap", "total used free percent sin sout")


class FakePsutil:
    def __init__(self) -> None:
        self.times = scputimes(1000.0, 0.0, 500.0, 8000.0, 100.0, 0.0, 10.0, 0.0, 0.0, 0.0)

    def cpu_times(self, percpu: bool = False) -> scputimes:
        assert not percpu
        return self.times

    def cpu_count(self, logical: bool = True) -> int:
        return 64

    def getloadavg(self) -> tuple[float, float, float]:
        return (3.12, 2.87, 2.40)

    def virtual_memory(self) -> svmem:
        return svmem(540_000_000_000, 500_000_000_000, 7.4, 30_000_000_000, 480_000_000_000)

    def swap_memory(self) -> sswap:
        return sswap(8_589_934_592, 1_048_576, 8_588_886_016, 0.0, 0, 0)

    def boot_time(self) -> float:
        return 1_699_135_876.0

    def pids(self) -> list[int]:
        return list(range(1, 1874))


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_follows_the_collector_protocol() -> None:
    assert isinstance(HostCollector(FakePsutil(), procfs=str(PROCFS)), Collector)


def test_host_sample() -> None:
    clock = Clock()
    [sample] = HostCollector(FakePsutil(), procfs=str(PROCFS), clock=clock).collect()
    assert (sample.kind, sample.ts, sample.key) == ("host", clock.t, {})
    assert sample.values == {
        "cpu_utilization_ratio": None,  # needs two collections
        "cpu_count": 64,
        "load1": 3.12,
        "load5": 2.87,
        "load15": 2.40,
        "memory_total_bytes": 540_000_000_000,
        "memory_available_bytes": 500_000_000_000,
        "memory_used_bytes": 30_000_000_000,
        "swap_total_bytes": 8_589_934_592,
        "swap_used_bytes": 1_048_576,
        "uptime_seconds": 864123.45,  # tests/data/proc/uptime
        "boot_time": 1_699_135_876.0,
        "processes": 1873,
    }


def test_cpu_utilization_from_deltas() -> None:
    fake = FakePsutil()
    collector = HostCollector(fake, procfs=str(PROCFS), clock=Clock())
    collector.collect()
    # 300 busy (user+system+softirq) and 700 idle+iowait seconds; 50 s of guest time is already
    # inside user and must not be counted twice.
    t = fake.times
    fake.times = t._replace(
        user=t.user + 250,
        system=t.system + 40,
        softirq=t.softirq + 10,
        idle=t.idle + 650,
        iowait=t.iowait + 50,
        guest=t.guest + 50,
    )
    [sample] = collector.collect()
    assert sample.values["cpu_utilization_ratio"] == pytest.approx(0.3)

    fake.times = fake.times._replace(idle=fake.times.idle + 100)
    assert collector.collect()[0].values["cpu_utilization_ratio"] == 0.0

    fake.times = scputimes(1.0, 0.0, 1.0, 10.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # counters reset
    assert collector.collect()[0].values["cpu_utilization_ratio"] is None


def test_uptime_without_procfs_comes_from_boot_time(tmp_path: Path) -> None:
    clock = Clock()
    [sample] = HostCollector(FakePsutil(), procfs=str(tmp_path), clock=clock).collect()
    assert sample.values["uptime_seconds"] == clock.t - 1_699_135_876.0


def test_check() -> None:
    assert HostCollector(FakePsutil(), procfs=str(PROCFS)).check()
    assert not HostCollector(object(), procfs=str(PROCFS)).check()


# -- live machine -------------------------------------------------------------------------------


def _meminfo() -> dict[str, int]:
    with open("/proc/meminfo") as f:
        return {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="no procfs on this machine")
def test_live_host_matches_procfs() -> None:
    collector = HostCollector(psutil)
    assert collector.check()
    first = collector.collect()[0].values
    meminfo = _meminfo()
    assert first["memory_total_bytes"] == meminfo["MemTotal"]
    assert abs(first["memory_available_bytes"] - meminfo["MemAvailable"]) <= (
        LIVE_MEMORY_AVAILABLE_RELATIVE_TOLERANCE * meminfo["MemTotal"]
    )
    assert first["swap_total_bytes"] == meminfo["SwapTotal"]
    assert first["cpu_count"] == os.cpu_count()
    with open("/proc/uptime") as f:
        assert abs(first["uptime_seconds"] - float(f.read().split()[0])) <= LIVE_UPTIME_TOLERANCE_SECONDS
    running = sum(1 for d in os.listdir("/proc") if d.isdigit())
    assert abs(first["processes"] - running) <= LIVE_PROCESS_COUNT_TOLERANCE
    assert first["load1"] >= 0 and first["cpu_utilization_ratio"] is None

    sum(i * i for i in range(200_000))  # let some CPU time pass
    ratio = collector.collect()[0].values["cpu_utilization_ratio"]
    assert ratio is None or 0.0 <= ratio <= 1.0

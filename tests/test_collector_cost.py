"""The host, network and storage collectors read /proc directly (issue #2) and must report exactly
what they reported through psutil: the same values, the same nowrap corrections, and psutil's
answer whenever a file is missing or unparsable.

Each check runs two collectors on one fixture procfs tree: one ``direct``, one through the real
psutil pointed at the same tree (``psutil.PROCFS_PATH``), and compares every value."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from psutil._common import _WrapNumbers

from collectors.host import HostCollector
from collectors.network import NetworkCollector
from collectors.procfs import NoWrap, is_real_psutil, meminfo_bytes
from collectors.records import Sample
from collectors.storage import StorageCollector

pytestmark = pytest.mark.skipif(not psutil.LINUX, reason="procfs layouts are Linux's")

DATA = Path(__file__).parent / "data"
U32 = 2**32

STAT = """cpu  {user} 120 {system} {idle} 300 0 {softirq} 0 {guest} 0
cpu0 1000 60 3000 40000 150 0 10 0 {guest} 0
cpu1 1000 60 3000 40000 150 0 10 0 0 0
intr 123456 0 0
ctxt 987654
btime 1699135876
processes 41234
procs_running 2
procs_blocked 0
"""
MEMINFO = """MemTotal:       {total} kB
MemFree:         8000000 kB
MemAvailable:   {avail} kB
Buffers:          100000 kB
Cached:          2000000 kB
SwapCached:            0 kB
Active:          3000000 kB
Inactive:        1000000 kB
SwapTotal:       2097148 kB
SwapFree:        {swapfree} kB
Shmem:             10000 kB
SReclaimable:      50000 kB
Slab:              80000 kB
"""
NETDEV_HEAD = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls"
    " carrier compressed\n"
)


def netdev_line(name: str, rx: int, tx: int, base: int = 0) -> str:
    rx_cols = [rx, base + 10, base + 1, base + 2, 5, 6, 0, 7]
    tx_cols = [tx, base + 20, base + 3, base + 4, 0, 0, 0, 0]
    return f"{name:>6}: " + " ".join(str(v) for v in rx_cols + tx_cols) + "\n"


def diskstats_line(major: int, minor: int, name: str, n: int, rtime: int, busy: int, in_flight: int = 2,
                   newer: bool = True) -> str:
    """A line of 20 fields (Linux 5.5+) or, unless ``newer``, of 14 (Linux 2.6 to 4.17)."""
    fields = [n, 7, n * 8, rtime, n // 2, 3, n * 4, rtime // 2 + 11, in_flight, busy, rtime + busy]
    return f"{major:4d} {minor:7d} {name} " + " ".join(map(str, fields)) + (" 0 0 0 0 5 6\n" if newer else "\n")


@pytest.fixture
def procfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A procfs tree that the real psutil reads too, with psutil's nowrap caches cleared."""
    root = tmp_path / "proc"
    (root / "net").mkdir(parents=True)
    for pid in ("1", "42", "4242", "self", "sys"):
        (root / pid).mkdir()
    write_stat(root, user=10_000, system=5_000, idle=80_000, softirq=100, guest=50)
    write_meminfo(root, total=16_000_000, avail=12_000_000, swapfree=1_048_576)
    (root / "uptime").write_text("864123.45 13702211.90\n")
    monkeypatch.setattr(psutil, "PROCFS_PATH", str(root))
    psutil.net_io_counters.cache_clear()  # type: ignore[attr-defined]
    psutil.disk_io_counters.cache_clear()  # type: ignore[attr-defined]
    yield root
    psutil.net_io_counters.cache_clear()  # type: ignore[attr-defined]
    psutil.disk_io_counters.cache_clear()  # type: ignore[attr-defined]


def write_stat(root: Path, **fields: int) -> None:
    (root / "stat").write_text(STAT.format(**fields))


def write_meminfo(root: Path, **fields: int) -> None:
    (root / "meminfo").write_text(MEMINFO.format(**fields))
    (root / "vmstat").write_text("pswpin 0\npswpout 0\n")  # what psutil.swap_memory() also reads


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def values(records: list[Any], key: str) -> dict[Any, dict[str, Any]]:
    return {r.key[key]: r.values for r in records if isinstance(r, Sample)}


def test_direct_is_the_default_only_for_the_real_psutil() -> None:
    assert is_real_psutil(psutil) and not is_real_psutil(object())
    assert HostCollector()._direct and HostCollector(psutil)._direct
    assert not HostCollector(object())._direct and HostCollector(object(), direct=True)._direct
    assert NetworkCollector()._direct and not NetworkCollector(object())._direct
    assert StorageCollector()._direct and not StorageCollector(object())._direct


def test_meminfo_bytes() -> None:
    text = b"MemTotal:  100 kB\nMemFree:  7 kB\nSwapTotal: x kB\nHugePages_Total: 0\n"
    assert meminfo_bytes(text, b"MemTotal:") == 102_400
    assert meminfo_bytes(text, b"MemFree:") == 7168
    assert meminfo_bytes(text, b"Free:") is None  # whole keys only
    assert meminfo_bytes(text, b"SwapTotal:") is None  # unparsable
    assert meminfo_bytes(text, b"SwapFree:") is None


# -- nowrap ---------------------------------------------------------------------------------------


def test_nowrap_matches_psutil_wrap_numbers() -> None:
    """Random walks with drops (resets, wraps), rows appearing and disappearing: NoWrap answers as
    psutil's wrap_numbers, call after call."""
    rng = random.Random(2)
    for _ in range(50):
        ours, theirs = NoWrap(), _WrapNumbers()
        state = {k: [rng.randrange(1000) for _ in range(4)] for k in ("a", "b", "c")}
        for _ in range(40):
            for row in state.values():
                for i in range(4):
                    roll = rng.random()
                    row[i] = rng.randrange(100) if roll < 0.1 else row[i] + (0 if roll < 0.3 else rng.randrange(50))
            present = {k: tuple(v) for k, v in state.items() if rng.random() < 0.85}
            assert ours.adjust(dict(present)) == theirs.run(dict(present), "x")


def test_nowrap_returns_the_same_dict_when_nothing_dropped() -> None:
    nowrap = NoWrap()
    first: dict[str, tuple[int, ...]] = {"eth0": (1, 2)}
    assert nowrap.adjust(first) is first
    second: dict[str, tuple[int, ...]] = {"eth0": (3, 2)}
    assert nowrap.adjust(second) is second
    assert nowrap.adjust({"eth0": (1, 2)}) == {"eth0": (4, 2)}  # a reset: psutil adds the last value


# -- host -----------------------------------------------------------------------------------------

HOST_SAME_MOMENT = ("load1", "load5", "load15")  # os.getloadavg(), live in both


def host_sample(collector: HostCollector) -> dict[str, Any]:
    [sample] = collector.collect()
    assert isinstance(sample, Sample)
    return sample.values


def host_values(collector: HostCollector) -> dict[str, Any]:
    return {k: v for k, v in host_sample(collector).items() if k not in HOST_SAME_MOMENT}


def test_host_direct_reads_match_psutil(procfs: Path) -> None:
    clock = Clock()
    direct = HostCollector(psutil, procfs=str(procfs), clock=clock, direct=True)
    via_psutil = HostCollector(psutil, procfs=str(procfs), clock=clock, direct=False)
    first = host_values(direct)
    assert first == host_values(via_psutil)
    assert first["processes"] == 3 and first["boot_time"] == 1_699_135_876.0
    assert first["memory_total_bytes"] == 16_000_000 * 1024
    assert first["memory_used_bytes"] == 4_000_000 * 1024
    assert first["swap_used_bytes"] == (2097148 - 1_048_576) * 1024

    write_stat(procfs, user=10_250, system=5_040, idle=80_650, softirq=110, guest=100)
    write_meminfo(procfs, total=16_000_000, avail=20_000_000, swapfree=0)  # available > total: free
    clock.t += 10
    second = host_values(direct)
    assert second == host_values(via_psutil)
    assert second["cpu_utilization_ratio"] is not None and 0 < second["cpu_utilization_ratio"] < 1
    assert second["memory_available_bytes"] == 8_000_000 * 1024

    write_stat(procfs, user=1, system=1, idle=1, softirq=0, guest=0)  # counters went backwards
    assert host_values(direct)["cpu_utilization_ratio"] is None
    assert host_values(via_psutil)["cpu_utilization_ratio"] is None


@pytest.mark.filterwarnings("ignore:'sin' and 'sout' swap memory stats:RuntimeWarning")  # the fixture has no vmstat
def test_host_falls_back_to_psutil_for_missing_or_odd_files(procfs: Path, tmp_path: Path) -> None:
    clock = Clock()
    via_psutil = HostCollector(psutil, procfs=str(procfs), clock=clock, direct=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    # Nothing under <procfs>: every value comes from psutil (reading PROCFS_PATH); uptime, which
    # psutil does not report, from boot_time and the clock as before.
    missing = host_values(HostCollector(psutil, procfs=str(empty), clock=clock, direct=True))
    expected = host_values(via_psutil)
    assert missing["uptime_seconds"] == clock.t - 1_699_135_876.0
    del missing["uptime_seconds"], expected["uptime_seconds"]
    expected["processes"] = missing["processes"]  # psutil lists PROCFS_PATH, the direct read <procfs>
    assert missing == expected

    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "stat").write_text("cpu 1 2 3\n")  # fewer fields than psutil names
    (odd / "meminfo").write_text("MemTotal: 16000000 kB\nMemFree: 8000000 kB\nMemAvailable: 0 kB\n")
    got = host_sample(HostCollector(psutil, procfs=str(odd), clock=clock, direct=True))
    vm = psutil.virtual_memory()  # MemAvailable 0: psutil's answer (it estimates), not total - 0
    assert (got["memory_total_bytes"], got["memory_available_bytes"]) == (vm.total, vm.available)
    assert got["swap_total_bytes"] == psutil.swap_memory().total


# -- network --------------------------------------------------------------------------------------


def net_values(collector: NetworkCollector) -> dict[Any, dict[str, Any]]:
    return values(collector.collect(), "interface")


def test_network_direct_reads_match_psutil(procfs: Path) -> None:
    clock = Clock()
    sysfs = str(DATA / "sysfs")  # eth0, eno2, ib0 and lo (type, speed, carrier_changes)
    kw: dict[str, Any] = {"sysfs": sysfs, "procfs": str(procfs), "clock": clock, "exclude": ["eno*"],
                          "infiniband": False}
    direct = NetworkCollector(psutil, direct=True, **kw)
    via_psutil = NetworkCollector(psutil, direct=False, **kw)

    def write(eth0_rx: int, eth0_tx: int, lo_rx: int, base: int = 0) -> None:
        (procfs / "net" / "dev").write_text(
            NETDEV_HEAD + netdev_line("lo", lo_rx, lo_rx) + netdev_line("eth0", eth0_rx, eth0_tx, base)
            + netdev_line("eno2", 5, 5) + netdev_line("ib0", 100, 200)
        )

    write(9_000_000, 7_000_000, 5000)
    first = net_values(direct)
    assert first == net_values(via_psutil)
    assert set(first) == {"lo", "eth0", "ib0"}
    eth0 = first["eth0"]
    assert (eth0["rx_bytes_total"], eth0["tx_bytes_total"], eth0["rx_packets_total"]) == (9_000_000, 7_000_000, 10)
    assert (eth0["rx_errors_total"], eth0["tx_errors_total"], eth0["rx_drops_total"], eth0["tx_drops_total"]) == (
        1, 3, 2, 4)
    assert eth0["speed_bits_per_second"] == 100_000_000_000 and eth0["carrier_changes_total"] == 4
    assert eth0["kind"] == "ethernet" and first["ib0"]["kind"] == "infiniband"
    # "lo" exists on every Linux machine: both ask the kernel for its flags and MTU.
    assert first["lo"]["up"] in (0, 1) and first["lo"]["mtu"] == psutil.net_if_stats()["lo"].mtu

    for step, (rx, tx, lo, base) in enumerate(
        [(9_002_000, 7_000_500, 6000, 5), (1000, 7_001_000, 7000, 0), (3000, 7_002_000, 100, 1)]
    ):  # then eth0's rx counter resets, then lo's
        write(rx, tx, lo, base)
        clock.t += 2.0
        got = net_values(direct)
        assert got == net_values(via_psutil), step
    # psutil's nowrap: after the reset rx keeps counting from the value before it.
    assert got["eth0"]["rx_bytes_total"] == 9_002_000 + 3000
    assert got["eth0"]["rx_bytes_per_second"] == 1000.0


def test_network_falls_back_to_psutil_for_a_missing_or_odd_file(procfs: Path, tmp_path: Path) -> None:
    (procfs / "net" / "dev").write_text(NETDEV_HEAD + netdev_line("lo", 5, 5) + netdev_line("eth0", 9, 7))
    kw: dict[str, Any] = {"sysfs": str(DATA / "sysfs"), "exclude": [], "infiniband": False}
    expected = net_values(NetworkCollector(psutil, procfs=str(procfs), direct=False, **kw))
    odd = tmp_path / "odd"
    (odd / "net").mkdir(parents=True)
    (odd / "net" / "dev").write_text(NETDEV_HEAD + "  eth0: 1 2 3\n")
    for root in (tmp_path / "missing", odd):
        assert net_values(NetworkCollector(psutil, procfs=str(root), direct=True, **kw)) == expected


def test_network_speed_of_a_link_without_a_speed_file_comes_from_psutil(procfs: Path, tmp_path: Path) -> None:
    (procfs / "net" / "dev").write_text(NETDEV_HEAD + netdev_line("lo", 5, 5))
    (tmp_path / "class" / "net" / "lo").mkdir(parents=True)  # no speed file at all
    kw: dict[str, Any] = {"sysfs": str(tmp_path), "procfs": str(procfs), "exclude": [], "infiniband": False}
    direct = net_values(NetworkCollector(psutil, direct=True, **kw))["lo"]
    assert direct == net_values(NetworkCollector(psutil, direct=False, **kw))["lo"]


@pytest.mark.skipif(not os.path.exists("/proc/net/dev"), reason="no /proc/net/dev on this machine")
def test_live_network_direct_matches_psutil() -> None:
    direct = net_values(NetworkCollector(psutil, exclude=[], infiniband=False, direct=True))
    via_psutil = net_values(NetworkCollector(psutil, exclude=[], infiniband=False, direct=False))
    assert set(direct) == set(via_psutil)
    for name, row in direct.items():
        for field in ("kind", "up", "mtu", "speed_bits_per_second", "carrier_changes_total"):
            assert row[field] == via_psutil[name][field], (name, field)


# -- storage --------------------------------------------------------------------------------------


def disk_values(collector: StorageCollector) -> dict[Any, dict[str, Any]]:
    return values(collector.collect(), "device")


def test_storage_direct_reads_match_psutil(procfs: Path) -> None:
    clock = Clock()
    sysfs = procfs.parent / "sys"  # no <sysfs>/block: partitions are not recognised, all reported
    (sysfs / "block").mkdir(parents=True)
    kw: dict[str, Any] = {"sysfs": str(sysfs), "procfs": str(procfs), "clock": clock, "paths": []}
    direct = StorageCollector(psutil, direct=True, **kw)
    via_psutil = StorageCollector(psutil, direct=False, **kw)

    def write(rtime: int, busy: int, n: int = 1000) -> None:
        (procfs / "diskstats").write_text(
            diskstats_line(7, 0, "loop0", 3, 4, 5)
            + diskstats_line(259, 0, "nvme0n1", n, rtime, busy, in_flight=7)
            + diskstats_line(8, 0, "sda", 50, 60, 70, in_flight=0, newer=False)
        )

    write(U32 - 3000, 1000)
    first = disk_values(direct)
    assert set(first) == {"nvme0n1", "sda"}
    nvme = first["nvme0n1"]
    assert nvme["reads_total"] == 1000 and nvme["read_bytes_total"] == 8000 * 512
    assert nvme["read_seconds_total"] == pytest.approx((U32 - 3000) / 1000)
    assert nvme["queue_depth"] == 7 and first["sda"]["queue_depth"] == 0
    # The psutil path takes in-flight I/Os from <sysfs>/block/<dev>/stat, or else this diskstats:
    # the direct path reads the same number from the same line.
    assert first == disk_values(via_psutil)

    for rtime, busy, n in [(U32 - 1000, 3000, 1500), (500, 5000, 2000), (1500, 100, 2500)]:
        write(rtime, busy, n)  # read_time wraps at 2**32 ms, then busy_time resets
        clock.t += 10.0
        got = disk_values(direct)
        assert got == disk_values(via_psutil)
    assert got["nvme0n1"]["read_seconds_total"] == pytest.approx((U32 - 1000 + 1500) / 1000)
    assert got["nvme0n1"]["reads_per_second"] == 50.0


def test_storage_falls_back_to_psutil_for_a_missing_or_odd_file(procfs: Path, tmp_path: Path) -> None:
    (procfs / "diskstats").write_text(diskstats_line(8, 0, "sda", 50, 60, 70))
    kw: dict[str, Any] = {"sysfs": str(tmp_path), "paths": []}
    expected = disk_values(StorageCollector(psutil, procfs=str(procfs), direct=False, **kw))
    assert set(expected) == {"sda"}
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "diskstats").write_text("   8       0 sda 1 2 3 4\n")  # a Linux 2.6 partition line
    for root in (tmp_path / "missing", odd):
        got = disk_values(StorageCollector(psutil, procfs=str(root), direct=True, **kw))
        assert got["sda"] == {**expected["sda"], "queue_depth": got["sda"]["queue_depth"]}
        assert got["sda"]["queue_depth"] is None  # neither <sysfs>/block/sda/stat nor a usable diskstats


class OnlyLibcCalls:
    """A psutil stand-in without the calls the direct reads replace: using one fails the test."""

    def cpu_count(self, logical: bool = True) -> int:
        return 2

    def getloadavg(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)

    def boot_time(self) -> float:
        return 1_699_135_876.0


def test_direct_collections_need_no_psutil_parsing(procfs: Path) -> None:
    """With every file present, the direct paths answer alone (the tests above would also pass
    if they silently fell back to psutil)."""
    (procfs / "net" / "dev").write_text(NETDEV_HEAD + netdev_line("eth0", 9, 7))
    (procfs / "diskstats").write_text(diskstats_line(8, 0, "sda", 50, 60, 70))
    host = host_sample(HostCollector(OnlyLibcCalls(), procfs=str(procfs), direct=True))
    assert host["memory_total_bytes"] == 16_000_000 * 1024 and host["processes"] == 3
    assert host["swap_total_bytes"] == 2097148 * 1024 and host["cpu_count"] == 2
    net = NetworkCollector(OnlyLibcCalls(), sysfs=str(DATA / "sysfs"), procfs=str(procfs), infiniband=False,
                           direct=True)
    assert net_values(net)["eth0"]["rx_bytes_total"] == 9
    storage = StorageCollector(OnlyLibcCalls(), sysfs=str(procfs), procfs=str(procfs), paths=[], direct=True)
    assert disk_values(storage)["sda"]["reads_total"] == 50

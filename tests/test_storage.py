"""StorageCollector against fixture sysfs/procfs trees and a fake psutil, and against this machine."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import psutil
import pytest

from collectors.records import Collector, Event, Sample
from collectors.storage import StorageCollector

# Live checks.
LIVE_FS_SIZE_RELATIVE_TOLERANCE = 0.01  # filesystem size vs `df -B1`
LIVE_DISK_BYTES_TOLERANCE = 64 * 1024 * 1024  # reads that may land between two samples
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size

DATA = Path(__file__).parent / "data"
SYSFS, PROCFS = DATA / "sysfs", DATA / "proc"

sdiskio = namedtuple(
    "sdiskio",
    "read_count write_count read_bytes write_bytes read_time write_time read_merged_count "
    "write_merged_count busy_time",
)
sdiskpart = namedtuple("sdiskpart", "device mountpoint fstype opts")
statvfs_result = namedtuple(
    "statvfs_result", "f_bsize f_frsize f_blocks f_bfree f_bavail f_files f_ffree f_favail f_flag f_namemax"
)


def io(reads: int, writes: int, rbytes: int, wbytes: int, busy_ms: int) -> sdiskio:
    return sdiskio(reads, writes, rbytes, wbytes, 873422, 12982014, 0, 0, busy_ms)


class FakePsutil:
    def __init__(self) -> None:
        self.disks = {
            "loop0": io(45, 0, 2136 * 512, 0, 24),
            "ram0": io(0, 0, 0, 0, 0),
            "nvme0n1": io(4518820, 19034215, 512361880 * 512, 1520381704 * 512, 11384020),
            "nvme0n1p1": io(1380, 2, 82108 * 512, 2 * 512, 200),
            "nvme0n1p2": io(4517300, 19034213, 512277460 * 512, 1520381702 * 512, 11383820),
            "sda": io(83004, 40021, 9137562 * 512, 3408440 * 512, 190220),
            "dm-0": io(4401230, 21766035, 512113020 * 512, 1520381702 * 512, 11390112),
        }
        self.partitions = [
            sdiskpart("/dev/nvme0n1p2", "/", "ext4", "rw,relatime"),
            sdiskpart("/dev/nvme0n1p1", "/boot/efi", "vfat", "rw"),
            sdiskpart("/dev/mapper/vg-scratch", "/scratch", "xfs", "rw,noatime"),
        ]

    def disk_io_counters(self, perdisk: bool = False) -> dict:
        assert perdisk
        return dict(self.disks)

    def disk_partitions(self, all: bool = False) -> list:
        return list(self.partitions)


class FakeStatvfs:
    def __init__(self) -> None:
        self.results = {
            "/": statvfs_result(4096, 4096, 1_000_000, 400_000, 350_000, 65536, 60000, 60000, 0, 255),
            "/scratch/job1": statvfs_result(4096, 4096, 2_000_000, 1_500_000, 1_500_000, 0, 0, 0, 0, 255),
        }

    def __call__(self, path: str) -> statvfs_result:
        if path not in self.results:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.results[path]


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(fake: FakePsutil | None = None, clock: Clock | None = None, **kwargs) -> StorageCollector:
    kwargs.setdefault("paths", [])
    return StorageCollector(
        fake or FakePsutil(),
        sysfs=str(SYSFS),
        procfs=str(PROCFS),
        clock=clock or Clock(),
        statvfs=FakeStatvfs(),
        **kwargs,
    )


def disks(records: list) -> dict[str, Sample]:
    return {r.key["device"]: r for r in records if isinstance(r, Sample) and r.kind == "disk"}


def test_follows_the_collector_protocol() -> None:
    assert isinstance(make(), Collector)


def test_disks_skip_loop_ram_and_partitions() -> None:
    rows = disks(make().collect())
    assert set(rows) == {"nvme0n1", "sda", "dm-0"}
    nvme = rows["nvme0n1"].values
    assert nvme == {
        "reads_total": 4518820,
        "writes_total": 19034215,
        "read_bytes_total": 512361880 * 512,
        "write_bytes_total": 1520381704 * 512,
        "read_seconds_total": pytest.approx(873.422),
        "write_seconds_total": pytest.approx(12982.014),
        "io_seconds_total": pytest.approx(11384.020),
        "read_bytes_per_second": None,
        "write_bytes_per_second": None,
        "reads_per_second": None,
        "writes_per_second": None,
        "utilization_ratio": None,
        "queue_depth": 7,  # 9th field of tests/data/sysfs/block/nvme0n1/stat
    }
    assert rows["sda"].values["queue_depth"] == 0
    assert rows["dm-0"].values["queue_depth"] == 3  # no sysfs entry: from /proc/diskstats


def test_partitions_and_patterns_are_configurable() -> None:
    rows = disks(make(partitions=True).collect())
    assert {"nvme0n1p1", "nvme0n1p2"} <= set(rows)
    assert rows["nvme0n1p2"].values["queue_depth"] == 5  # from /proc/diskstats
    assert set(disks(make(exclude=["ram*"]).collect())) == {"loop0", "nvme0n1", "sda", "dm-0"}
    assert set(disks(make(include=["nvme*", "sd*"]).collect())) == {"nvme0n1", "sda"}


def test_rates_utilization_and_reset(tmp_path: Path) -> None:
    fake, clock = FakePsutil(), Clock()
    collector = make(fake, clock, include=["sda"])
    collector.collect()
    fake.disks["sda"] = io(
        83004 + 300, 40021 + 50, 9137562 * 512 + 3_000_000, 3408440 * 512 + 500_000, 190220 + 2500
    )
    clock.t += 10.0
    sda = disks(collector.collect())["sda"].values
    assert sda["reads_per_second"] == 30.0 and sda["writes_per_second"] == 5.0
    assert sda["read_bytes_per_second"] == 300_000.0 and sda["write_bytes_per_second"] == 50_000.0
    assert sda["utilization_ratio"] == pytest.approx(0.25)  # 2.5 s busy in 10 s

    # busy_time advancing faster than the wall clock (merged queues, clock skew) is clamped to 1.
    fake.disks["sda"] = io(0, 40021 + 50, 0, 3408440 * 512 + 500_000, 190220 + 2500 + 12_000)
    clock.t += 10.0
    sda = disks(collector.collect())["sda"].values
    assert sda["utilization_ratio"] == 1.0
    assert sda["reads_per_second"] is None and sda["read_bytes_per_second"] is None  # went backwards
    assert sda["writes_per_second"] == 0.0


def test_queue_depth_unknown_without_sources(tmp_path: Path) -> None:
    collector = StorageCollector(FakePsutil(), sysfs=str(tmp_path), procfs=str(tmp_path), paths=[])
    rows = disks(collector.collect())
    # Without <sysfs>/block nothing is known to be a partition, so partitions are reported too.
    assert "nvme0n1p1" in rows
    assert all(r.values["queue_depth"] is None for r in rows.values())


def test_filesystems() -> None:
    clock = Clock()
    records = make(clock=clock, paths=["/", "/scratch/job1"], include=[]).collect()
    fs = {r.key["path"]: r for r in records}
    assert all(isinstance(r, Sample) and r.kind == "filesystem" and r.ts == clock.t for r in records)
    assert fs["/"].values == {
        "size_bytes": 1_000_000 * 4096,
        "free_bytes": 400_000 * 4096,
        "avail_bytes": 350_000 * 4096,
        "used_bytes": 600_000 * 4096,
        "files_total": 65536,
        "files_free": 60000,
        "device": "/dev/nvme0n1p2",
        "fstype": "ext4",
    }
    scratch = fs["/scratch/job1"].values
    assert (scratch["device"], scratch["fstype"]) == ("/dev/mapper/vg-scratch", "xfs")
    # xfs/btrfs-style "no inode limit" reports 0 inodes: unknown, not zero.
    assert scratch["files_total"] is None and scratch["files_free"] is None


def test_missing_path_warns_once_then_recovers() -> None:
    statvfs = FakeStatvfs()
    collector = StorageCollector(
        FakePsutil(),
        sysfs=str(SYSFS),
        procfs=str(PROCFS),
        clock=Clock(),
        statvfs=statvfs,
        paths=["/", "/data"],
        include=[],
    )
    first = collector.collect()
    events = [r for r in first if isinstance(r, Event)]
    assert len(events) == 1
    assert (events[0].kind, events[0].severity, events[0].source) == ("collector_error", "warning", "storage")
    assert events[0].details["path"] == "/data" and "/data" in events[0].message
    assert [r.key["path"] for r in first if isinstance(r, Sample)] == ["/"]
    assert not [r for r in collector.collect() if isinstance(r, Event)]

    statvfs.results["/data"] = statvfs.results["/"]
    assert {r.key["path"] for r in collector.collect()} == {"/", "/data"}
    del statvfs.results["/data"]
    assert len([r for r in collector.collect() if isinstance(r, Event)]) == 1  # failing again: warn again


def test_check(tmp_path: Path) -> None:
    assert make().check()
    empty = FakePsutil()
    empty.disks = {}
    assert not StorageCollector(empty, paths=[]).check()


# -- live machine -------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("df") is None, reason="no df on this machine")
def test_live_root_filesystem_matches_df() -> None:
    row = next(r for r in StorageCollector(psutil).collect() if r.kind == "filesystem")
    out = (
        subprocess.run(["df", "-B1", "--output=size,avail", "/"], capture_output=True, text=True, check=True)
        .stdout.splitlines()[-1]
        .split()
    )
    df_size, df_avail = int(out[0]), int(out[1])
    assert abs(row.values["size_bytes"] - df_size) <= LIVE_FS_SIZE_RELATIVE_TOLERANCE * df_size
    assert abs(row.values["avail_bytes"] - df_avail) <= LIVE_FS_SIZE_RELATIVE_TOLERANCE * df_size
    assert row.values["fstype"]


def _diskstats_read_bytes() -> dict[str, int]:
    with open("/proc/diskstats") as f:
        return {p[2]: int(p[5]) * SECTOR_BYTES for p in (line.split() for line in f)}


@pytest.mark.skipif(not os.path.exists("/proc/diskstats"), reason="no /proc/diskstats on this machine")
def test_live_disks_match_proc_diskstats() -> None:
    collector = StorageCollector(psutil, paths=[])
    before = _diskstats_read_bytes()
    rows = disks(collector.collect())
    after = _diskstats_read_bytes()
    if not rows:
        pytest.skip("no block devices besides loop/ram devices")
    assert collector.check()
    for name, row in rows.items():
        assert not name.startswith(("loop", "ram"))
        value = row.values["read_bytes_total"]
        assert before[name] - LIVE_DISK_BYTES_TOLERANCE <= value <= after[name] + LIVE_DISK_BYTES_TOLERANCE
        assert isinstance(row.values["queue_depth"], int) and row.values["queue_depth"] >= 0

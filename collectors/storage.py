"""Storage telemetry: per block device I/O counters and derived rates, and the size and free space
of configured filesystem paths."""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from collectors.network import counter_rate
from collectors.procfs import NoWrap, is_real_psutil, read_all
from collectors.records import Event, Record, Sample, Value

_MS = 1e-3
# In-flight I/Os is the 9th field of <sysfs>/block/<dev>/stat; /proc/diskstats puts major, minor and
# name in front of the same fields.
_STAT_IN_FLIGHT = 8
_DISKSTATS_IN_FLIGHT = 3 + _STAT_IN_FLIGHT
# psutil.disk_io_counters() reads lines of 14 fields (Linux 2.6+) or 18 and more (4.18+ added
# discards, 5.5 flushes); sectors are 512 bytes whatever the device's block size.
_DISKSTATS_MIN_FIELDS = 14
_DISKSTATS_FIELDS_BEFORE_DISCARDS = 18
_SECTOR_BYTES = 512

DISK_VALUE_NAMES = (
    "reads_total",
    "writes_total",
    "read_bytes_total",
    "write_bytes_total",
    "read_seconds_total",
    "write_seconds_total",
    "io_seconds_total",
    "read_bytes_per_second",
    "write_bytes_per_second",
    "reads_per_second",
    "writes_per_second",
    "utilization_ratio",
    "queue_depth",
)
FILESYSTEM_VALUE_NAMES = (
    "size_bytes",
    "free_bytes",
    "avail_bytes",
    "used_bytes",
    "files_total",
    "files_free",
    "device",
    "fstype",
)
# A configured path's mount (device, fstype) is looked up again this often, and at once when the
# filesystem under the path changes (its f_fsid), not on every collection.
MOUNT_REFRESH_SECONDS = 60.0
# Counter -> the per-second rate derived from it.
_RATES = {
    "read_bytes_total": "read_bytes_per_second",
    "write_bytes_total": "write_bytes_per_second",
    "reads_total": "reads_per_second",
    "writes_total": "writes_per_second",
}


class _DiskIO(NamedTuple):
    """The fields of psutil's ``sdiskio`` on Linux, in its order."""

    read_count: int
    write_count: int
    read_bytes: int
    write_bytes: int
    read_time: int
    write_time: int
    read_merged_count: int
    write_merged_count: int
    busy_time: int


class StorageCollector:
    """``Sample(kind="disk")`` per block device and ``Sample(kind="filesystem")`` per configured path.

    ``exclude`` are shell patterns on device names; partitions (a name that appears as
    ``<sysfs>/block/<disk>/<name>``) are skipped unless ``partitions=True``. A configured path that
    cannot be read yields one ``collector_error`` warning event until it recovers.
    """

    name = "storage"

    def __init__(
        self,
        psutil_module: Any = None,
        sysfs: str = "/sys",
        procfs: str = "/proc",
        clock: Callable[[], float] = time.time,
        statvfs: Callable[[str], Any] = os.statvfs,
        paths: Iterable[str] = ("/",),
        include: Iterable[str] | None = None,
        exclude: Iterable[str] = ("loop*", "ram*"),
        partitions: bool = False,
        direct: bool | None = None,
    ) -> None:
        """``direct``: take the block device counters and in-flight I/Os from one read of
        <procfs>/diskstats rather than psutil.disk_io_counters() and a <sysfs>/block/<dev>/stat per
        device, falling back to those when the file is missing or in a format psutil would not read
        that way. None (the default) means yes when ``psutil_module`` is psutil itself; an injected
        stand-in stays the source of everything psutil would answer."""
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._direct = is_real_psutil(psutil_module) if direct is None else direct
        self._diskstats_path = os.path.join(procfs, "diskstats")
        self._nowrap = NoWrap()
        self._sysfs = sysfs
        self._procfs = procfs
        self._clock = clock
        self._statvfs = statvfs
        self._paths = list(paths)
        self._include = list(include) if include is not None else None
        self._exclude = list(exclude)
        self._partitions = partitions
        self._prev: dict[str, tuple[float, dict[str, int | None]]] = {}
        self._partitions_for: frozenset[str] | None = None
        self._partition_cache: set[str] = set()
        self._failing_paths: set[str] = set()
        self._mount_for: dict[str, tuple[Any, Any, float]] = {}  # path -> (f_fsid, mount, when looked up)
        self._matches: dict[str, bool] = {}  # device -> passes include/exclude

    def check(self) -> bool:
        try:
            return bool(self._psutil.disk_io_counters(perdisk=True)) or bool(self._paths)
        except (OSError, RuntimeError):
            return bool(self._paths)

    def collect(self) -> list[Record]:
        now = self._clock()
        return [*self._disks(now), *self._filesystems(now)]

    def close(self) -> None:
        self._prev.clear()

    # -- block devices ------------------------------------------------------------------------

    def _partition_names(self) -> set[str]:
        block = os.path.join(self._sysfs, "block")
        names: set[str] = set()
        try:
            disks = os.listdir(block)
        except OSError:
            return names
        for disk in disks:
            try:
                entries = os.listdir(os.path.join(block, disk))
            except OSError:
                continue
            names.update(e for e in entries if os.path.isfile(os.path.join(block, disk, e, "stat")))
        return names

    def _wanted(self, name: str, partitions: set[str]) -> bool:
        if not self._partitions and name in partitions:
            return False
        matches = self._matches.get(name)  # the patterns are fixed: each name is matched once
        if matches is None:
            matches = not any(fnmatch.fnmatchcase(name, p) for p in self._exclude) and (
                self._include is None or any(fnmatch.fnmatchcase(name, p) for p in self._include))
            if len(self._matches) > 4096:
                self._matches.clear()
            self._matches[name] = matches
        return matches

    def _in_flight(self, name: str, diskstats: dict[str, int] | None) -> tuple[int | None, Any]:
        """In-flight I/Os from sysfs, else /proc/diskstats (read once per collect, lazily)."""
        try:
            with open(os.path.join(self._sysfs, "block", name, "stat"), "rb", buffering=0) as f:
                return int(f.read(4096).split()[_STAT_IN_FLIGHT]), diskstats
        except (OSError, ValueError, IndexError):
            pass
        if diskstats is None:
            diskstats = {}
            try:
                with open(os.path.join(self._procfs, "diskstats"), encoding="ascii") as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) > _DISKSTATS_IN_FLIGHT and parts[_DISKSTATS_IN_FLIGHT].isdigit():
                            diskstats[parts[2]] = int(parts[_DISKSTATS_IN_FLIGHT])
            except OSError:
                pass
        return diskstats.get(name), diskstats

    def _read_diskstats(self) -> tuple[dict[str, list[bytes]], frozenset[str]] | None:
        """(device -> its /proc/diskstats fields, every device) or None when the file is missing or
        has a line psutil would read otherwise (pre-2.6 or partition-only formats)."""
        data = read_all(self._diskstats_path)
        if data is None:
            return None
        lines: dict[str, list[bytes]] = {}
        for line in data.splitlines():
            fields = line.split()
            if not fields:
                continue
            n = len(fields)
            if n != _DISKSTATS_MIN_FIELDS and n < _DISKSTATS_FIELDS_BEFORE_DISCARDS:
                return None
            lines[os.fsdecode(fields[2])] = fields
        return lines, frozenset(lines)

    def _counters(self) -> tuple[dict[str, Any], frozenset[str], dict[str, int] | None]:
        """(device -> psutil-style counters, every device, device -> in-flight I/Os if known).

        Direct: from <procfs>/diskstats, converting only the wanted devices' fields, with psutil's
        nowrap corrections (see NoWrap: the millisecond fields are 32-bit and wrap). In-flight I/Os
        come from the same line: the kernel prints the same in-flight count there as in
        <sysfs>/block/<dev>/stat, which the psutil path reads."""
        parsed = self._read_diskstats() if self._direct else None
        if parsed is None:
            counters = self._psutil.disk_io_counters(perdisk=True) or {}
            return counters, frozenset(counters), None
        lines, devices = parsed
        partitions = self._partitions_cache_for(devices)
        raw: dict[str, tuple[int, ...]] = {}
        in_flight: dict[str, int] = {}
        for name, f in lines.items():
            if not self._wanted(name, partitions):
                continue
            try:  # psutil's order: reads writes rbytes wbytes rtime wtime rmerged wmerged busy
                raw[name] = (int(f[3]), int(f[7]), int(f[5]) * _SECTOR_BYTES, int(f[9]) * _SECTOR_BYTES,
                             int(f[6]), int(f[10]), int(f[4]), int(f[8]), int(f[12]))
                in_flight[name] = int(f[_DISKSTATS_IN_FLIGHT])
            except ValueError:
                counters = self._psutil.disk_io_counters(perdisk=True) or {}
                return counters, frozenset(counters), None
        adjusted = self._nowrap.adjust(raw)
        return {name: _DiskIO(*v) for name, v in adjusted.items()}, devices, in_flight

    def _partitions_cache_for(self, devices: frozenset[str]) -> set[str]:
        if self._partitions_for != devices:  # sysfs is only re-scanned when devices come or go
            self._partition_cache, self._partitions_for = self._partition_names(), devices
        return self._partition_cache

    def _disks(self, now: float) -> list[Sample]:
        counters, devices, in_flight = self._counters()
        partitions = self._partitions_cache_for(devices)
        diskstats: dict[str, int] | None = None
        out: list[Sample] = []
        for name in sorted(counters):
            if not self._wanted(name, partitions):
                continue
            c = counters[name]
            raw: dict[str, int | None] = {
                "reads_total": c.read_count,
                "writes_total": c.write_count,
                "read_bytes_total": c.read_bytes,
                "write_bytes_total": c.write_bytes,
                "busy_ms": getattr(c, "busy_time", None),  # Linux only
            }
            busy_ms = raw["busy_ms"]
            values: dict[str, Value] = {
                **{k: raw[k] for k in _RATES},
                "read_seconds_total": c.read_time * _MS,
                "write_seconds_total": c.write_time * _MS,
                "io_seconds_total": busy_ms * _MS if busy_ms is not None else None,
            }
            if in_flight is not None:
                values["queue_depth"] = in_flight.get(name)
            else:
                values["queue_depth"], diskstats = self._in_flight(name, diskstats)
            prev_ts, prev = self._prev.get(name, (None, {}))
            dt = now - prev_ts if prev_ts is not None else None
            for counter, rate in _RATES.items():
                values[rate] = counter_rate(prev.get(counter), raw[counter], dt)
            busy_rate = counter_rate(prev.get("busy_ms"), busy_ms, dt)
            values["utilization_ratio"] = min(1.0, busy_rate * _MS) if busy_rate is not None else None
            self._prev[name] = (now, raw)
            out.append(
                Sample(
                    kind="disk", ts=now, key={"device": name}, values={k: values[k] for k in DISK_VALUE_NAMES}
                )
            )
        for gone in set(self._prev) - {s.key["device"] for s in out}:
            del self._prev[gone]
        return out

    # -- filesystems --------------------------------------------------------------------------

    def _mounts(self) -> list[Any]:
        try:
            parts = self._psutil.disk_partitions(all=True)
        except (OSError, RuntimeError):
            return []
        # Longest mount point first, so the first prefix match is the mount the path lives on.
        return sorted(parts, key=lambda p: len(p.mountpoint), reverse=True)

    def _mount(self, path: str, st: Any, now: float, mounts: list[Any] | None) -> tuple[Any, list[Any] | None]:
        """The mount ``path`` lives on (or None), and the mount table if it had to be read."""
        fsid = getattr(st, "f_fsid", None)
        cached = self._mount_for.get(path)
        if cached is not None and fsid is not None and cached[0] == fsid \
                and cached[2] <= now < cached[2] + MOUNT_REFRESH_SECONDS:
            return cached[1], mounts
        if mounts is None:
            mounts = self._mounts()
        real = os.path.realpath(path)
        mount = next((m for m in mounts if _under(real, m.mountpoint)), None)
        self._mount_for[path] = (fsid, mount, now)
        return mount, mounts

    def _filesystems(self, now: float) -> list[Record]:
        out: list[Record] = []
        mounts: list[Any] | None = None  # read at most once per collection, and only when needed
        for path in self._paths:
            try:
                st = self._statvfs(path)
            except OSError as exc:
                if path not in self._failing_paths:
                    self._failing_paths.add(path)
                    out.append(
                        Event(
                            ts=now,
                            kind="collector_error",
                            severity="warning",
                            source=self.name,
                            message=f"cannot read filesystem {path!r}: {exc.strerror or exc}",
                            details={"path": path, "errno": exc.errno},
                        )
                    )
                continue
            self._failing_paths.discard(path)
            mount, mounts = self._mount(path, st, now, mounts)
            frsize = st.f_frsize or st.f_bsize
            out.append(
                Sample(
                    kind="filesystem",
                    ts=now,
                    key={"path": path},
                    values={
                        "size_bytes": st.f_blocks * frsize,
                        "free_bytes": st.f_bfree * frsize,
                        "avail_bytes": st.f_bavail * frsize,
                        "used_bytes": (st.f_blocks - st.f_bfree) * frsize,
                        # Filesystems without a fixed inode table (btrfs, many FUSE) report 0 inodes.
                        "files_total": st.f_files or None,
                        "files_free": st.f_ffree if st.f_files else None,
                        "device": mount.device if mount is not None else None,
                        "fstype": mount.fstype if mount is not None else None,
                    },
                )
            )
        return out


def _under(path: str, mountpoint: str) -> bool:
    return mountpoint == "/" or path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")

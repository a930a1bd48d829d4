"""What a dcgm-exporter or node_exporter series means in gpufleet: the mapping table behind
``gpufleet import prometheus`` (documented in docs/PROMETHEUS.md), with its unit conversions and the
rules that name a series' node and thing. Pure: no I/O, so the table is tested on its own.

dcgm-exporter prints DCGM's units (%, MiB, mJ, MHz, KB/s); node_exporter already uses base units.
Everything here leaves in gpufleet's base units (ratios 0-1, bytes, joules, hertz, bytes/s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from collectors.network import _ARPHRD_KIND
from collectors.records import Value
from collectors.xid import XidInfo, classify

MIB = 2**20
XID_METRIC = "DCGM_FI_DEV_XID_ERRORS"  # converted as XID_FIELD, never stored as a column
UNAME_METRIC = "node_uname_info"  # names the node of every node_exporter series of its instance
# Interfaces and block devices the agent skips too (collectors/network.py, collectors/storage.py).
SKIP_INTERFACES = frozenset({"lo"})
SKIP_DISK_PREFIXES = ("loop", "ram")


@dataclass(frozen=True, slots=True)
class Field:
    """One exporter metric: the sample table (``kind``) and column it fills, the factor from its unit
    to the column's base unit, the Python type stored, and, for a counter, the column of the
    per-second rate derived from it (as the agent's collectors derive it)."""

    metric: str
    kind: str  # gpu | interface | disk | filesystem | host
    column: str
    unit: str  # the exporter's unit, for the documentation
    scale: float = 1.0
    cast: type = float
    rate: str | None = None


def _f(metric: str, kind: str, column: str, unit: str, scale: float = 1.0, cast: type = float,
       rate: str | None = None) -> Field:
    return Field(metric, kind, column, unit, scale, cast, rate)


FIELDS: tuple[Field, ...] = (
    _f("DCGM_FI_DEV_GPU_UTIL", "gpu", "utilization_gpu_ratio", "%", 0.01),
    _f("DCGM_FI_DEV_MEM_COPY_UTIL", "gpu", "utilization_memory_ratio", "%", 0.01),
    _f("DCGM_FI_DEV_FB_USED", "gpu", "memory_used_bytes", "MiB", MIB, int),
    _f("DCGM_FI_DEV_FB_FREE", "gpu", "memory_free_bytes", "MiB", MIB, int),
    _f("DCGM_FI_DEV_FB_TOTAL", "gpu", "memory_total_bytes", "MiB", MIB, int),
    _f("DCGM_FI_DEV_FB_RESERVED", "gpu", "_reserved", "MiB", MIB, int),  # only for the total
    _f("DCGM_FI_DEV_GPU_TEMP", "gpu", "temperature_gpu_celsius", "°C"),
    _f("DCGM_FI_DEV_MEMORY_TEMP", "gpu", "temperature_memory_celsius", "°C"),
    _f("DCGM_FI_DEV_POWER_USAGE", "gpu", "power_watts", "W"),
    _f("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "gpu", "power_limit_watts", "W"),
    _f("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "gpu", "energy_joules_total", "mJ", 1e-3),
    _f("DCGM_FI_DEV_SM_CLOCK", "gpu", "sm_clock_hz", "MHz", 1e6),
    _f("DCGM_FI_DEV_MEM_CLOCK", "gpu", "mem_clock_hz", "MHz", 1e6),
    _f("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "gpu", "clock_event_reasons", "bitmask", 1, int),
    _f("DCGM_FI_DEV_PSTATE", "gpu", "performance_state", "P-state", 1, int),
    _f("DCGM_FI_DEV_FAN_SPEED", "gpu", "fan_speed_ratio", "%", 0.01),
    _f("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "gpu", "pcie_tx_bytes_per_second", "KB/s", 1e3),
    _f("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "gpu", "pcie_rx_bytes_per_second", "KB/s", 1e3),
    _f("DCGM_FI_PROF_PCIE_TX_BYTES", "gpu", "pcie_tx_bytes_per_second", "B/s"),
    _f("DCGM_FI_PROF_PCIE_RX_BYTES", "gpu", "pcie_rx_bytes_per_second", "B/s"),
    _f("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "gpu", "pcie_replay_total", "count", 1, int),
    _f("DCGM_FI_DEV_PCIE_LINK_GEN", "gpu", "pcie_link_gen", "generation", 1, int),
    _f("DCGM_FI_DEV_PCIE_LINK_WIDTH", "gpu", "pcie_link_width", "lanes", 1, int),
    _f("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", "gpu", "nvlink_bytes_per_second", "KB/s", 1e3),
    _f("DCGM_FI_PROF_NVLINK_TX_BYTES", "gpu", "nvlink_tx_bytes_per_second", "B/s"),
    _f("DCGM_FI_PROF_NVLINK_RX_BYTES", "gpu", "nvlink_rx_bytes_per_second", "B/s"),
    _f("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "gpu", "ecc_corrected_volatile_total", "count", 1, int),
    _f("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "gpu", "ecc_uncorrected_volatile_total", "count", 1, int),
    _f("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "gpu", "ecc_corrected_aggregate_total", "count", 1, int),
    _f("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "gpu", "ecc_uncorrected_aggregate_total", "count", 1, int),
    _f("DCGM_FI_DEV_RETIRED_SBE", "gpu", "retired_pages_sbe", "pages", 1, int),
    _f("DCGM_FI_DEV_RETIRED_DBE", "gpu", "retired_pages_dbe", "pages", 1, int),
    _f("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", "gpu", "remapped_rows_correctable", "rows", 1, int),
    _f("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "gpu", "remapped_rows_uncorrectable", "rows", 1, int),
    _f("DCGM_FI_DEV_ROW_REMAP_PENDING", "gpu", "remapped_rows_pending", "0/1", 1, bool),
    _f("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gpu", "remapped_rows_failure", "0/1", 1, bool),
    _f("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gpu", "gr_engine_active_ratio", "ratio"),
    _f("DCGM_FI_PROF_SM_ACTIVE", "gpu", "sm_active_ratio", "ratio"),
    _f("DCGM_FI_PROF_SM_OCCUPANCY", "gpu", "sm_occupancy_ratio", "ratio"),
    _f("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gpu", "tensor_active_ratio", "ratio"),
    _f("DCGM_FI_PROF_DRAM_ACTIVE", "gpu", "dram_active_ratio", "ratio"),
    _f("node_network_receive_bytes_total", "interface", "rx_bytes_total", "bytes", 1, int, "rx_bytes_per_second"),
    _f("node_network_transmit_bytes_total", "interface", "tx_bytes_total", "bytes", 1, int, "tx_bytes_per_second"),
    _f("node_network_receive_packets_total", "interface", "rx_packets_total", "packets", 1, int),
    _f("node_network_transmit_packets_total", "interface", "tx_packets_total", "packets", 1, int),
    _f("node_network_receive_errs_total", "interface", "rx_errors_total", "packets", 1, int),
    _f("node_network_transmit_errs_total", "interface", "tx_errors_total", "packets", 1, int),
    _f("node_network_receive_drop_total", "interface", "rx_drops_total", "packets", 1, int),
    _f("node_network_transmit_drop_total", "interface", "tx_drops_total", "packets", 1, int),
    _f("node_network_speed_bytes", "interface", "speed_bits_per_second", "B/s", 8),
    _f("node_network_up", "interface", "up", "0/1", 1, int),
    _f("node_network_carrier_changes_total", "interface", "carrier_changes_total", "count", 1, int),
    _f("node_network_mtu_bytes", "interface", "mtu", "bytes", 1, int),
    _f("node_network_protocol_type", "interface", "kind", "ARPHRD_*", 1, int),
    _f("node_disk_reads_completed_total", "disk", "reads_total", "count", 1, int, "reads_per_second"),
    _f("node_disk_writes_completed_total", "disk", "writes_total", "count", 1, int, "writes_per_second"),
    _f("node_disk_read_bytes_total", "disk", "read_bytes_total", "bytes", 1, int, "read_bytes_per_second"),
    _f("node_disk_written_bytes_total", "disk", "write_bytes_total", "bytes", 1, int, "write_bytes_per_second"),
    _f("node_disk_read_time_seconds_total", "disk", "read_seconds_total", "s"),
    _f("node_disk_write_time_seconds_total", "disk", "write_seconds_total", "s"),
    _f("node_disk_io_time_seconds_total", "disk", "io_seconds_total", "s", 1, float, "utilization_ratio"),
    _f("node_disk_io_now", "disk", "queue_depth", "I/Os", 1, int),
    _f("node_filesystem_size_bytes", "filesystem", "size_bytes", "bytes", 1, int),
    _f("node_filesystem_free_bytes", "filesystem", "free_bytes", "bytes", 1, int),
    _f("node_filesystem_avail_bytes", "filesystem", "avail_bytes", "bytes", 1, int),
    _f("node_filesystem_files", "filesystem", "files_total", "inodes", 1, int),
    _f("node_filesystem_files_free", "filesystem", "files_free", "inodes", 1, int),
    _f("node_load1", "host", "load1", "load"),
    _f("node_load5", "host", "load5", "load"),
    _f("node_load15", "host", "load15", "load"),
    _f("node_memory_MemTotal_bytes", "host", "memory_total_bytes", "bytes", 1, int),
    _f("node_memory_MemAvailable_bytes", "host", "memory_available_bytes", "bytes", 1, int),
)
BY_METRIC: dict[str, Field] = {f.metric: f for f in FIELDS}
RATES = {f.column: f for f in FIELDS if f.rate is not None}  # counter column -> its field
XID_FIELD = Field(XID_METRIC, "gpu", "_xid", "XID code", 1, int)
# Metrics that fill a column only when its preferred metric is absent: DCGM's profiling PCIe rate is
# exact, NVML's PCIe throughput is a coarse sample.
FALLBACKS = frozenset({"DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "DCGM_FI_DEV_PCIE_RX_THROUGHPUT"})
# Every metric the import asks Prometheus for, in one selector.
METRICS: tuple[str, ...] = (*BY_METRIC, XID_METRIC, UNAME_METRIC)
# Per kind, the columns the import fills (stored and derived), in a fixed order so that every row of
# a kind has the same shape (the write path's fast path). A column named ``_…`` is not stored.
DERIVED = {"gpu": ("memory_total_bytes",), "filesystem": ("used_bytes", "device", "fstype")}
COLUMNS: dict[str, tuple[str, ...]] = {}
for _field in FIELDS:
    _cols = COLUMNS.setdefault(_field.kind, ())
    for _col in (_field.column, _field.rate):
        if _col is not None and not _col.startswith("_") and _col not in _cols:
            _cols = (*_cols, _col)
    COLUMNS[_field.kind] = _cols
for _kind, _extra in DERIVED.items():
    COLUMNS[_kind] = (*COLUMNS[_kind], *(c for c in _extra if c not in COLUMNS[_kind]))
COLUMNS["gpu"] = ("status", *COLUMNS["gpu"])


def convert(field: Field, xs: list[float]) -> list[Value]:
    """A series' values (floats, as read from Prometheus' text) in the column's unit and type; NaN
    and infinities are unknown. Whole columns at a time: this is the import's hot loop, so the
    common case (every value finite) is one pass, the rest a second."""
    scale, cast = field.scale, field.cast
    if field.column != "kind" and cast is not bool:
        try:
            if cast is int:  # int() of NaN or ±inf raises: such a column takes the careful path
                return list(map(int, xs)) if scale == 1 else [int(x * scale) for x in xs]
            out: list[Any] = xs if scale == 1 else [x * scale for x in xs]
        except (ValueError, OverflowError):
            pass
        else:
            if math.isfinite(sum(out)):  # NaN and ±inf propagate (an overflow just takes the careful path)
                return out
    if field.column == "kind":
        return [_ARPHRD_KIND.get(int(x), "other") if x - x == 0 else None for x in xs]
    if scale != 1:
        xs = [x * scale for x in xs]
    if cast is int:
        return [int(x) if x - x == 0 else None for x in xs]  # x - x is NaN exactly for NaN and ±inf
    if cast is bool:
        return [x != 0 if x - x == 0 else None for x in xs]
    return [x if x - x == 0 else None for x in xs]


def counter_rates(field: Field, values: list[Value], step: float) -> list[float | None]:
    """Per-second rates between consecutive grid points (``values[i]`` is one step after
    ``values[i - 1]``); None for the first point, a missing neighbour, or a reset. Busy seconds
    per second is a utilization ratio, capped at 1 as the agent caps it."""
    out: list[float | None] = [None]
    cap = field.rate == "utilization_ratio"
    for prev, cur in zip(values, values[1:], strict=False):
        if isinstance(prev, int | float) and isinstance(cur, int | float) and cur >= prev:
            rate = (cur - prev) / step
            out.append(min(1.0, rate) if cap else rate)
        else:
            out.append(None)
    return out


def instance_host(instance: str) -> str:
    """The host part of an ``instance`` label: ``gpu-01:9100`` -> ``gpu-01``, ``[::1]:9100`` -> ``::1``."""
    if instance.startswith("["):
        return instance[1:].split("]", 1)[0]
    host, sep, port = instance.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else instance


def node_name(labels: dict[str, str], unames: dict[str, str]) -> str | None:
    """The gpufleet node of a series: dcgm-exporter's ``Hostname``; else, for node_exporter, the
    ``nodename`` its instance reports in ``node_uname_info``; else the instance's host part."""
    name = labels.get("Hostname")
    if name:
        return name
    instance = labels.get("instance")
    if not instance:
        return None
    return unames.get(instance) or instance_host(instance)


def thing_key(kind: str, labels: dict[str, str]) -> dict[str, Any] | None:
    """The sample key of a series within its node, or None for a series the import skips (a MIG
    instance, the loopback interface, a loop or RAM disk, a series missing its identifying label)."""
    if kind == "gpu":
        uuid, index = labels.get("UUID"), labels.get("gpu")
        if not uuid or not (index or "").isdigit() or labels.get("GPU_I_ID"):
            return None
        return {"gpu_index": int(index or 0), "gpu_uuid": uuid}
    if kind == "interface":
        device = labels.get("device")
        return {"interface": device} if device and device not in SKIP_INTERFACES else None
    if kind == "disk":
        device = labels.get("device")
        return {"device": device} if device and not device.startswith(SKIP_DISK_PREFIXES) else None
    if kind == "filesystem":
        path = labels.get("mountpoint")
        return {"path": path} if path else None
    return {}


def derive(kind: str, columns: dict[str, list[Value]], labels: dict[str, str], n: int) -> None:
    """Fill a thing's derived columns in place: GPU memory total (used + free + reserved, DCGM's
    identity, when the exporter has no total), filesystem used bytes, device and type, and inode
    counts a filesystem without an inode table reports as 0 (unknown, as the agent stores them)."""
    if kind == "gpu":
        reserved = columns.pop("_reserved", None) or [0] * n
        used, free = columns.get("memory_used_bytes"), columns.get("memory_free_bytes")
        if "memory_total_bytes" not in columns and used is not None and free is not None:
            columns["memory_total_bytes"] = [u + f + (r if isinstance(r, int) else 0)
                                             if isinstance(u, int) and isinstance(f, int) else None
                                             for u, f, r in zip(used, free, reserved, strict=True)]
    elif kind == "filesystem":
        size, free = columns.get("size_bytes"), columns.get("free_bytes")
        if size is not None and free is not None:
            columns["used_bytes"] = [s - f if isinstance(s, int) and isinstance(f, int) else None
                                     for s, f in zip(size, free, strict=True)]
        columns["device"], columns["fstype"] = [labels.get("device")] * n, [labels.get("fstype")] * n
        files = columns.get("files_total")
        if files is not None and 0 in files:
            gone = [x == 0 for x in files]
            columns["files_total"] = [None if g else x for g, x in zip(gone, files, strict=True)]
            if "files_free" in columns:
                columns["files_free"] = [None if g else x for g, x in zip(gone, columns["files_free"], strict=True)]


def gpu_info(labels: dict[str, str]) -> dict[str, Any]:
    """Inventory fields dcgm-exporter carries as labels."""
    return {"model": labels.get("modelName") or None, "pci_bus_id": labels.get("pci_bus_id") or None}


def node_info(labels: dict[str, str]) -> dict[str, Any]:
    driver = labels.get("DCGM_FI_DRIVER_VERSION")
    return {"driver_version": driver} if driver else {}


def xid_changes(values: list[Value]) -> list[tuple[int, XidInfo]]:
    """The XIDs a ``DCGM_FI_DEV_XID_ERRORS`` series reports as new, by position: the gauge holds the
    last XID seen, so an event is a change to a non-zero code from the point one step earlier. A
    first point (nothing one step earlier) is not an event: when that XID happened is unknown."""
    out = []
    for i in range(1, len(values)):
        prev, cur = values[i - 1], values[i]
        if prev is not None and isinstance(cur, int) and cur not in (0, prev):
            out.append((i, classify(cur)))
    return out

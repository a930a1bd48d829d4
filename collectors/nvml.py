"""GPU telemetry and hardware events through NVML.

The NVML module is injected: production passes ``pynvml`` (from ``nvidia-ml-py``), tests and
``--simulate`` pass a ``collectors.fake_nvml.FakeNVML``; both go through exactly this code.
Every value is converted to base units at this edge (NVML speaks mW, mJ, MHz, KB/s, KiB, percent).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from operator import attrgetter
from types import SimpleNamespace
from typing import Any

from collectors.kmsg import KernelLog
from collectors.records import Event, GpuInfo, Record, Sample
from collectors.xid import classify, normalise_pci

log = logging.getLogger(__name__)

# Bit → name of NVML's clock-event (throttle) reasons, as nvidia-smi's "Clocks Event Reasons".
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
THERMAL_REASONS = 0x20 | 0x40
POWER_REASONS = 0x4 | 0x80
# An XID seen from both NVML and the kernel log within this window is one event.
XID_DEDUP_SECONDS = 10.0

# Field ids (nvmlDeviceGetFieldValues), from nvml.h.
FI_MEMORY_TEMP = 82
FI_NVLINK_LINK_COUNT = 91
FI_NVLINK_TX_KIB = 138
FI_NVLINK_RX_KIB = 139
FI_NVLINK_ERRORS = (38, 45, 52, 59)  # CRC flit, CRC data, replay, recovery: totals over all lanes
FI_NVLINK_STATE = 165  # per link (scope id = link): 0 inactive, else up (active, sleeping, traffic disabled)
ALL_LINKS = 0xFFFFFFFF  # scope id: the sum over every link
# Counters and readings that one nvmlDeviceGetFieldValues call per GPU and cycle returns, with the
# column each fills; each entry succeeds or fails on its own, as the single calls they replace did.
BATCHED_FIELDS = (
    (FI_MEMORY_TEMP, "temperature_memory_celsius"),
    (83, "energy_joules_total"),  # mJ
    (94, "pcie_replay_total"),
    (3, "ecc_corrected_volatile_total"),  # single-bit, volatile
    (4, "ecc_uncorrected_volatile_total"),  # double-bit, volatile
    (5, "ecc_corrected_aggregate_total"),
    (6, "ecc_uncorrected_aggregate_total"),
    (29, "retired_pages_sbe"),
    (30, "retired_pages_dbe"),
    (142, "remapped_rows_correctable"),
    (143, "remapped_rows_uncorrectable"),
    (144, "remapped_rows_pending"),
    (145, "remapped_rows_failure"),
)
NVLINK_FIELDS = ((FI_NVLINK_TX_KIB, ALL_LINKS), (FI_NVLINK_RX_KIB, ALL_LINKS), *FI_NVLINK_ERRORS)
NVLINK_COLUMNS = ("nvlink_links_active", "nvlink_tx_bytes_total", "nvlink_rx_bytes_total", "nvlink_errors_total")
# Static values (the inventory, and the maxima every sample repeats) are read again this often,
# not every cycle; a GPU that comes back after an error is read again at once.
INVENTORY_REFRESH_SECONDS = 300.0
_BATCHED_IDS = tuple(fid for fid, _ in BATCHED_FIELDS)
_BATCHED_COLUMNS = tuple(column for _, column in BATCHED_FIELDS)

# An NVML call that fails for being unsupported leaves these columns NULL.
_CALL_COLUMNS = {
    "utilization_gpu_ratio": ("utilization_gpu_ratio", "utilization_memory_ratio"),
    "memory_used_bytes": ("memory_used_bytes", "memory_free_bytes", "memory_total_bytes"),
    "field_values": tuple(column for _, column in BATCHED_FIELDS) + NVLINK_COLUMNS,
    "nvlink_link_count": NVLINK_COLUMNS,
}

# NVML errors that mean "this field is not available here", not "this GPU is in trouble".
_FIELD_ERRORS = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_InvalidArgument",
                 "NVMLError_FunctionNotFound", "NVMLError_NotFound", "NVMLError_NoData")


def decode_reasons(mask: int | None) -> list[str]:
    """Names of the clock-event reasons set in ``mask`` (``[]`` for none, unknown bits ignored)."""
    if not mask:
        return []
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]


class _GpuLost(Exception):
    pass


class _GpuFailed(Exception):
    pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Device:
    """What the collector keeps about one GPU between cycles: its handle and UUID (read again after
    an error or when the GPU count changes), its NVLink count and the field request built from it,
    and when its static values were last read."""

    __slots__ = ("handle", "uuid", "links", "request", "link_fallback", "read_at")

    def __init__(self, handle: Any, uuid: str) -> None:
        self.handle = handle
        self.uuid = uuid
        self.links = 0
        self.request: tuple[Any, ...] = _BATCHED_IDS
        self.link_fallback = False  # the driver has no per-link state field: ask link by link
        self.read_at: float | None = None

    def set_links(self, links: int) -> None:
        self.links = links
        states = () if self.link_fallback else tuple((FI_NVLINK_STATE, link) for link in range(links))
        self.request = (*_BATCHED_IDS, *NVLINK_FIELDS, *states) if links else _BATCHED_IDS

    def stale(self, now: float) -> bool:
        return self.read_at is None or not self.read_at <= now < self.read_at + INVENTORY_REFRESH_SECONDS


class NvmlCollector:
    """Samples every GPU NVML sees and turns XIDs, ECC errors, throttling and lost GPUs into events.

    ``nvml`` is the pynvml module or a fake with the same API. ``kernel_log`` reads ``NVRM: Xid``
    lines (NVML misses some XIDs); pass ``None`` to skip it.
    """

    name = "nvml"

    def __init__(self, nvml: Any = None, *, clock: Callable[[], float] = time.time,
                 kernel_log: KernelLog | None = None, event_wait_ms: int = 500, event_thread: bool = True,
                 process_name: Callable[[int], str | None] | None = None, process_rows: bool = True) -> None:
        if nvml is None:
            import pynvml  # nvidia-ml-py

            nvml = pynvml
        self.nvml = nvml
        self.clock = clock
        self.kernel_log = kernel_log
        self.event_wait_ms = event_wait_ms
        # With no thread, collect() drains the event set itself: XIDs then carry the collection's
        # time, which is what a replay on a simulated clock (the demo's history) needs.
        self.event_thread = event_thread
        self._event_set: Any = None
        self.process_name = process_name  # pid -> name (collectors.procinfo.ProcessIdentity in production)
        self.process_rows = process_rows  # False: no per-process rows (process_privacy: off), only the count
        self._initialised = False
        self._inventory: dict[int, GpuInfo] = {}  # index → last GpuInfo
        self._devices: dict[int, _Device] = {}  # index → handle, UUID, NVLinks, when last read in full
        self._count: int | None = None
        self._unsupported: dict[int, set[str]] = {}
        self._state: dict[int, str] = {}  # index → ok | lost | error
        self._prev: dict[int, dict[str, Any]] = {}
        self._pci: dict[str, int] = {}
        self._recent_xids: dict[tuple[int | None, int], float] = {}
        self._xid_lock = threading.Lock()  # the event thread and collect() both classify XIDs
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._field_errors = tuple(getattr(nvml, n) for n in _FIELD_ERRORS if hasattr(nvml, n))
        self._field_error_codes: dict[int, bool] = {}  # NVML return code -> one of _field_errors?
        self.driver_version: str | None = None
        self.cuda_driver_version: int | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def check(self) -> bool:
        try:
            self._init()
        except Exception as exc:  # NVML missing, driver not loaded, library not found
            log.info("NVML not available: %s", exc)
            return False
        return True

    def _init(self) -> None:
        if self._initialised:
            return
        self.nvml.nvmlInit()
        self._initialised = True
        self.driver_version = self._try(self.nvml.nvmlSystemGetDriverVersion)
        self.cuda_driver_version = self._try(self.nvml.nvmlSystemGetCudaDriverVersion)
        if self.driver_version is not None:
            self.driver_version = _text(self.driver_version)
        self._start_event_thread()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.event_wait_ms / 1000 + 2)
            self._thread = None
        if self._event_set is not None:
            self._free_event_set(self._event_set)
            self._event_set = None
        if self.kernel_log is not None:
            self.kernel_log.close()
        self._devices.clear()
        self._count = None
        if self._initialised:
            try:
                self.nvml.nvmlShutdown()
            except Exception as exc:
                log.debug("nvmlShutdown: %s", exc)
            self._initialised = False

    # -- collection ---------------------------------------------------------------------------

    def collect(self) -> list[Record]:
        self._init()
        now = self.clock()
        out: list[Record] = []
        count = self.nvml.nvmlDeviceGetCount()
        if count != self._count:  # GPUs came or went: indices may now name other GPUs
            self._devices.clear()
            self._count = count
        for index in range(count):
            out.extend(self._collect_gpu(index, now))
        for index in sorted(i for i in self._inventory if i >= count):
            # A GPU the inventory knows that NVML no longer lists has vanished from the bus.
            out.extend(self._mark_down(index, now, "lost", "GPU is no longer visible to NVML"))
        out.extend(self._drain_events(now))
        return out

    def _collect_gpu(self, index: int, now: float) -> list[Record]:
        try:
            dev = self._devices.get(index) or self._device(index)
            records: list[Record] = []
            info = self._info(index, dev, now)
            if info is not None:
                records.append(info)
            values = self._values(index, dev)
        except (_GpuLost, _GpuFailed) as exc:
            self._devices.pop(index, None)  # handle and UUID are read again on the next try
            return self._mark_down(index, now, "lost" if isinstance(exc, _GpuLost) else "error", str(exc))
        self._devices[index] = dev
        uuid = dev.uuid
        records.extend(self._transitions(index, uuid, now, values))
        processes = values.pop("_processes")
        records.append(Sample("gpu", now, {"gpu_index": index, "gpu_uuid": uuid}, values))
        for p in processes if self.process_rows else ():
            records.append(Sample("gpu_process", now, {"gpu_index": index, "gpu_uuid": uuid, "pid": p.pid},
                                  {"name": self.process_name(p.pid) if self.process_name else None,
                                   "used_memory_bytes": p.usedGpuMemory, "mig_instance": p.mig}))
        if self._state.get(index) not in (None, "ok"):
            records.append(Event(now, "gpu_recovered", "info", f"GPU {index} reports again",
                                 gpu_index=index, gpu_uuid=uuid, source="nvml", category="gpu-hardware"))
        self._state[index] = "ok"
        return records

    def _device(self, index: int) -> _Device:
        handle = self._call(self.nvml.nvmlDeviceGetHandleByIndex, index)
        return _Device(handle, _text(self._call(self.nvml.nvmlDeviceGetUUID, handle)))

    def _mark_down(self, index: int, now: float, state: str, reason: str) -> list[Record]:
        known = self._inventory.get(index)
        uuid = known.uuid if known else None
        out: list[Record] = []
        if self._state.get(index) != state:
            if state == "lost":
                out.append(Event(now, "gpu_lost", "critical", f"GPU {index} lost: {reason}", gpu_index=index,
                                 gpu_uuid=uuid, source="nvml", category="gpu-hardware", fatal=True,
                                 recommended_action=classify(79).recommended_action))
            else:
                out.append(Event(now, "nvml_error", "warning", f"GPU {index}: NVML error: {reason}",
                                 gpu_index=index, gpu_uuid=uuid, source="nvml", category="gpu-hardware"))
            self._state[index] = state
        if uuid is not None:
            out.append(Sample("gpu", now, {"gpu_index": index, "gpu_uuid": uuid},
                              {"status": state, "error": reason}))
        return out

    # -- NVML calls ---------------------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call NVML; a lost GPU or a failing one aborts this GPU's collection."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            if isinstance(exc, self.nvml.NVMLError_GpuIsLost):
                raise _GpuLost(str(exc) or "GPU is lost") from exc
            raise _GpuFailed(f"{fn.__name__}: {exc}") from exc

    def _field(self, index: int, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call NVML for one field; unsupported → None, remembered as unsupported for this GPU."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as exc:
            self._unavailable(index, name, exc)
            return None

    def _unavailable(self, index: int, name: str, exc: Exception) -> None:
        """NVML refused field ``name``: remember it as unsupported, or abort the GPU if it is lost or failing."""
        if self._field_errors and isinstance(exc, self._field_errors):
            self._unsupported.setdefault(index, set()).update(_CALL_COLUMNS.get(name, (name,)))
            return
        if isinstance(exc, self.nvml.NVMLError_GpuIsLost):
            raise _GpuLost(str(exc) or "GPU is lost") from exc
        raise _GpuFailed(f"{name}: {exc}") from exc

    def _field_failed(self, index: int, name: str, code: int) -> None:
        """``_unavailable`` for a field entry that returned ``code``. Whether a code means "not
        available here" is settled once per code; the common case (a field this GPU never has, every
        cycle) then costs a set lookup rather than building an exception."""
        field_error = self._field_error_codes.get(code)
        if field_error is None:
            exc = self.nvml.NVMLError(code)
            field_error = self._field_error_codes[code] = bool(self._field_errors) and isinstance(
                exc, self._field_errors)
        if field_error and name in self._unsupported.get(index, ()):
            return
        self._unavailable(index, name, self.nvml.NVMLError(code))

    def _try(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    def _info(self, index: int, dev: _Device, now: float) -> GpuInfo | None:
        """The GPU's inventory record, returned only when it is new or has changed. Static values are
        read again every ``INVENTORY_REFRESH_SECONDS`` (and after an error), not every cycle."""
        nvml, f, handle, uuid = self.nvml, self._field, dev.handle, dev.uuid
        known = self._inventory.get(index)
        unsupported = sorted(self._unsupported.get(index, ()))
        if known is not None and known.uuid == uuid and known.unsupported == unsupported and not dev.stale(now):
            return None
        pci = f(index, "pci_bus_id", nvml.nvmlDeviceGetPciInfo, handle)
        bus_id = _text(getattr(pci, "busId", "") or getattr(pci, "busIdLegacy", "")) if pci else None
        mem = f(index, "memory_total_bytes", nvml.nvmlDeviceGetMemoryInfo, handle)
        limit = f(index, "power_limit_default_watts", nvml.nvmlDeviceGetPowerManagementDefaultLimit, handle)
        sm_max = f(index, "sm_clock_max_hz", nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM)
        mem_max = f(index, "mem_clock_max_hz", nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_MEM)
        mig = f(index, "mig_mode", nvml.nvmlDeviceGetMigMode, handle)
        serial = f(index, "serial", nvml.nvmlDeviceGetSerial, handle)
        name = f(index, "model", nvml.nvmlDeviceGetName, handle)
        info = GpuInfo(
            index=index,
            uuid=uuid,
            model=_text(name) if name is not None else None,
            serial=_text(serial) if serial is not None else None,
            pci_bus_id=bus_id or None,
            memory_total_bytes=int(mem.total) if mem is not None else None,
            power_limit_default_watts=limit / 1000 if limit is not None else None,
            sm_clock_max_hz=sm_max * 1e6 if sm_max is not None else None,
            mem_clock_max_hz=mem_max * 1e6 if mem_max is not None else None,
            pcie_link_gen_max=f(index, "pcie_link_gen_max", nvml.nvmlDeviceGetMaxPcieLinkGeneration, handle),
            pcie_link_width_max=f(index, "pcie_link_width_max", nvml.nvmlDeviceGetMaxPcieLinkWidth, handle),
            mig_mode=mig[0] if mig is not None else None,
            unsupported=[],
        )
        dev.set_links(self._link_count(index, handle))
        dev.read_at = now
        if bus_id:
            self._pci[normalise_pci(bus_id)] = index
        # Fields unsupported at inventory time plus those found by the first full sample.
        self._inventory[index] = info
        if known is None or known.uuid != uuid:
            self._values(index, dev)  # discovers the unsupported set before the record goes out
        info.unsupported = sorted(self._unsupported.get(index, ()))
        if info.unsupported and (known is None or known.unsupported != info.unsupported):
            log.info("GPU %d (%s) does not support: %s", index, info.model, ", ".join(info.unsupported))
        return None if info == known else info

    def _link_count(self, index: int, handle: Any) -> int:
        got = self._field(index, "nvlink_link_count", self.nvml.nvmlDeviceGetFieldValues, handle,
                          [FI_NVLINK_LINK_COUNT])
        links = _field_number(got[0]) if got and got[0].nvmlReturn == 0 else None
        if not links:
            self._unsupported.setdefault(index, set()).update(NVLINK_COLUMNS)
        return int(links or 0)

    def _values(self, index: int, dev: _Device) -> dict[str, Any]:
        nvml, f, h = self.nvml, self._field, dev.handle
        info = self._inventory[index]
        v: dict[str, Any] = {"status": "ok", "error": None}
        util = f(index, "utilization_gpu_ratio", nvml.nvmlDeviceGetUtilizationRates, h)
        v["utilization_gpu_ratio"] = util.gpu / 100 if util is not None else None
        v["utilization_memory_ratio"] = util.memory / 100 if util is not None else None
        mem = f(index, "memory_used_bytes", nvml.nvmlDeviceGetMemoryInfo, h)
        v["memory_used_bytes"] = int(mem.used) if mem is not None else None
        v["memory_free_bytes"] = int(mem.free) if mem is not None else None
        v["memory_total_bytes"] = int(mem.total) if mem is not None else None
        v["temperature_gpu_celsius"] = f(index, "temperature_gpu_celsius", nvml.nvmlDeviceGetTemperature, h,
                                         nvml.NVML_TEMPERATURE_GPU)
        power = f(index, "power_watts", nvml.nvmlDeviceGetPowerUsage, h)
        v["power_watts"] = power / 1000 if power is not None else None
        limit = f(index, "power_limit_watts", nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        v["power_limit_watts"] = limit / 1000 if limit is not None else None
        for name, kind in (("sm_clock_hz", nvml.NVML_CLOCK_SM), ("mem_clock_hz", nvml.NVML_CLOCK_MEM)):
            mhz = f(index, name, nvml.nvmlDeviceGetClockInfo, h, kind)
            v[name] = mhz * 1e6 if mhz is not None else None
        v["sm_clock_max_hz"], v["mem_clock_max_hz"] = info.sm_clock_max_hz, info.mem_clock_max_hz
        reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) \
            or nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        v["clock_event_reasons"] = f(index, "clock_event_reasons", reasons_fn, h)
        v["performance_state"] = f(index, "performance_state", nvml.nvmlDeviceGetPerformanceState, h)
        fan = f(index, "fan_speed_ratio", nvml.nvmlDeviceGetFanSpeed, h)
        v["fan_speed_ratio"] = fan / 100 if fan is not None else None
        tx = f(index, "pcie_tx_bytes_per_second", nvml.nvmlDeviceGetPcieThroughput, h, nvml.NVML_PCIE_UTIL_TX_BYTES)
        rx = f(index, "pcie_rx_bytes_per_second", nvml.nvmlDeviceGetPcieThroughput, h, nvml.NVML_PCIE_UTIL_RX_BYTES)
        v["pcie_tx_bytes_per_second"] = tx * 1000 if tx is not None else None  # KB/s
        v["pcie_rx_bytes_per_second"] = rx * 1000 if rx is not None else None
        v["pcie_link_gen"] = f(index, "pcie_link_gen", nvml.nvmlDeviceGetCurrPcieLinkGeneration, h)
        v["pcie_link_gen_max"] = info.pcie_link_gen_max
        v["pcie_link_width"] = f(index, "pcie_link_width", nvml.nvmlDeviceGetCurrPcieLinkWidth, h)
        v["pcie_link_width_max"] = info.pcie_link_width_max
        v.update(self._field_values(index, dev))
        mig = f(index, "mig_mode", nvml.nvmlDeviceGetMigMode, h)
        v["mig_mode"] = mig[0] if mig is not None else None
        procs = self._processes(index, h, v["mig_mode"])
        v["process_count"] = len(procs) if procs is not None else None
        v["_processes"] = procs or []
        return v

    def _field_values(self, index: int, dev: _Device) -> dict[str, Any]:
        """Energy, memory temperature, the PCIe replay counter, ECC totals, retired pages, remapped
        rows and NVLink (state of each link, throughput, errors) in one ``nvmlDeviceGetFieldValues``
        call, where single calls would take 14 plus one per NVLink.

        NVML fills one entry per requested field, in request order, and the request's layout is
        fixed (``_Device.set_links``): the batched fields, then the NVLink fields, then one state
        per link; so each answer is taken by its position, not looked up by its request."""
        request = dev.request
        got = self._field(index, "field_values", self.nvml.nvmlDeviceGetFieldValues, dev.handle, request)
        numbers: list[int | float | None] = [None] * len(request)
        no_link_state = False
        getters, ull, batched = _INT_GETTERS, _ULL_GETTER, len(_BATCHED_IDS)
        first_state = batched + len(NVLINK_FIELDS)
        for position, fv in zip(range(len(request)), got or (), strict=False):
            ret = fv.nvmlReturn
            if ret == 0:
                # _field_number(fv), inlined for the integer types: this runs for every field of every GPU.
                getter = getters.get(getattr(fv, "valueType", 3), ull)
                if getter is None:  # a double
                    numbers[position] = _field_number(fv)
                    continue
                try:
                    numbers[position] = int(getter(fv.value))
                except (AttributeError, TypeError):  # no such member, or None: as _field_number answers
                    numbers[position] = _field_number(fv)
            elif position < batched:
                self._field_failed(index, _BATCHED_COLUMNS[position], ret)
            elif position >= first_state:
                no_link_state = True
        if no_link_state:  # a driver without the per-link state field: ask link by link from now on
            dev.link_fallback = True
            dev.set_links(dev.links)
        v: dict[str, Any] = dict(zip(_BATCHED_COLUMNS, numbers, strict=False))
        temp, energy = v["temperature_memory_celsius"], v["energy_joules_total"]
        v["temperature_memory_celsius"] = float(temp) if temp is not None else None
        v["energy_joules_total"] = energy / 1000 if energy is not None else None
        for column in ("remapped_rows_pending", "remapped_rows_failure"):
            v[column] = bool(v[column]) if v[column] is not None else None
        v.update(dict.fromkeys(NVLINK_COLUMNS))
        if dev.links:
            if dev.link_fallback:
                v["nvlink_links_active"] = self._active_links(index, dev.handle, dev.links)
            else:
                states = numbers[first_state:first_state + dev.links]
                v["nvlink_links_active"] = len(states) - states.count(0) if None not in states else None
            tx, rx = numbers[batched], numbers[batched + 1]
            errors = [e for e in numbers[batched + 2:first_state] if e is not None]
            v["nvlink_tx_bytes_total"] = tx * 1024.0 if tx is not None else None
            v["nvlink_rx_bytes_total"] = rx * 1024.0 if rx is not None else None
            v["nvlink_errors_total"] = int(sum(errors)) if errors else None
        return v

    def _active_links(self, index: int, h: Any, links: int) -> int | None:
        active = 0
        for link in range(links):
            state = self._field(index, "nvlink_links_active", self.nvml.nvmlDeviceGetNvLinkState, h, link)
            if state is None:
                return None
            active += 1 if state else 0
        return active

    def _processes(self, index: int, h: Any, mig_mode: int | None) -> list[Any] | None:
        procs = self._field(index, "process_count", self.nvml.nvmlDeviceGetComputeRunningProcesses, h)
        if procs is None:
            return None
        out = []
        for p in procs:
            used = getattr(p, "usedGpuMemory", None)
            gi = getattr(p, "gpuInstanceId", None)
            mig = f"{gi}/{getattr(p, 'computeInstanceId', 0)}" if mig_mode and gi not in (None, 0xFFFFFFFF) else None
            # NVML reports NVML_VALUE_NOT_AVAILABLE (ULL max) when memory is unknown.
            out.append(SimpleNamespace(pid=int(p.pid), usedGpuMemory=used if used and used < 2**63 else None,
                                       mig=mig))
        return out

    # -- events -------------------------------------------------------------------------------

    def _transitions(self, index: int, uuid: str, now: float, v: dict[str, Any]) -> list[Record]:
        """Events for changes between samples: ECC errors, thermal and power throttling onset."""
        prev = self._prev.get(index)
        self._prev[index] = {k: v[k] for k in ("clock_event_reasons", "ecc_uncorrected_volatile_total",
                                                "remapped_rows_pending", "remapped_rows_failure")}
        if prev is None:
            return []
        out: list[Record] = []
        reasons, before = v["clock_event_reasons"] or 0, prev["clock_event_reasons"] or 0
        for mask, kind, what in ((THERMAL_REASONS, "thermal", "thermal slowdown"),
                                 (POWER_REASONS, "power", "power capping")):
            if reasons & mask and not before & mask:
                out.append(Event(now, kind, "warning", f"GPU {index}: {what} ({', '.join(decode_reasons(reasons))})",
                                 gpu_index=index, gpu_uuid=uuid, source="nvml", category="gpu-hardware",
                                 details={"reasons": decode_reasons(reasons),
                                          "temperature_celsius": v["temperature_gpu_celsius"],
                                          "power_watts": v["power_watts"]}))
        unc, unc_before = v["ecc_uncorrected_volatile_total"], prev["ecc_uncorrected_volatile_total"]
        if unc is not None and unc_before is not None and unc > unc_before:
            out.append(Event(now, "ecc", "critical", f"GPU {index}: {unc - unc_before} uncorrectable ECC error(s)",
                             code="uncorrected", gpu_index=index, gpu_uuid=uuid, source="nvml",
                             category="gpu-hardware", fatal=True,
                             recommended_action=classify(48).recommended_action,
                             details={"delta": unc - unc_before, "total": unc}))
        if v["remapped_rows_failure"] and not prev["remapped_rows_failure"]:
            out.append(Event(now, "ecc", "critical", f"GPU {index}: row remapping failed; replace the GPU",
                             code="remap_failure", gpu_index=index, gpu_uuid=uuid, source="nvml",
                             category="gpu-hardware", fatal=True,
                             recommended_action="Row remapping failed: drain the GPU and replace it."))
        elif v["remapped_rows_pending"] and not prev["remapped_rows_pending"]:
            out.append(Event(now, "ecc", "warning", f"GPU {index}: row remapping pending; reset the GPU",
                             code="remap_pending", gpu_index=index, gpu_uuid=uuid, source="nvml",
                             category="gpu-hardware",
                             recommended_action="A row remap is pending: drain and reset the GPU to apply it."))
        return out

    def _xid_event(self, ts: float, index: int | None, code: int, source: str, message: str,
                   details: dict[str, Any]) -> Event | None:
        key = (index, code)
        with self._xid_lock:
            last = self._recent_xids.get(key)
            if last is not None and abs(ts - last) < XID_DEDUP_SECONDS:
                return None
            self._recent_xids[key] = ts
        info = classify(code)
        uuid = self._inventory[index].uuid if index is not None and index in self._inventory else None
        where = f"GPU {index}" if index is not None else "unknown GPU"
        return Event(ts, "xid", info.severity, f"XID {code} ({info.mnemonic}) on {where}: {message}".rstrip(": "),
                     code=str(code), category=info.category, recommended_action=info.recommended_action,
                     fatal=info.fatal, gpu_index=index, gpu_uuid=uuid, source=source,
                     details={"mnemonic": info.mnemonic, "resolution": info.resolution, **details})

    def _drain_events(self, now: float) -> list[Record]:
        if self._event_set is not None:
            self._poll_events()
        out: list[Record] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                break
        if self.kernel_log is not None:
            for kx in self.kernel_log.read_xids():
                index = self._pci.get(kx.pci_bus_id)
                ev = self._xid_event(now, index, kx.code, "kmsg", kx.message,
                                     {"pci_bus_id": kx.pci_bus_id, "pid": kx.pid})
                if ev is not None:
                    out.append(ev)
        return out

    def _start_event_thread(self) -> None:
        nvml = self.nvml
        try:
            event_set = nvml.nvmlEventSetCreate()
            registered = 0
            for index in range(nvml.nvmlDeviceGetCount()):
                try:
                    handle = nvml.nvmlDeviceGetHandleByIndex(index)
                    nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, event_set)
                    registered += 1
                except nvml.NVMLError as exc:
                    log.info("GPU %d: XID events not available from NVML: %s", index, exc)
        except nvml.NVMLError as exc:
            log.info("NVML event set not available: %s", exc)
            return
        if not registered:
            return
        if not self.event_thread:
            self._event_set = event_set
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._event_loop, args=(event_set,), name="nvml-events",
                                        daemon=True)
        self._thread.start()

    def _event_loop(self, event_set: Any) -> None:
        nvml = self.nvml
        failures = 0
        while not self._stop.is_set():
            try:
                self._wait_event(event_set, self.event_wait_ms)
            except nvml.NVMLError_Timeout:
                continue
            except nvml.NVMLError as exc:
                failures += 1
                log.warning("NVML event wait failed (%s); retrying", exc)
                self._stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
                continue
            failures = 0
        self._free_event_set(event_set)

    def _wait_event(self, event_set: Any, wait_ms: int) -> None:
        """Wait up to ``wait_ms`` for one NVML event and queue it if it is an XID."""
        nvml = self.nvml
        data = nvml.nvmlEventSetWait_v2(event_set, wait_ms)
        if not data.eventType & nvml.nvmlEventTypeXidCriticalError:
            return
        try:
            index: int | None = nvml.nvmlDeviceGetIndex(data.device)
        except nvml.NVMLError:
            index = None
        ev = self._xid_event(self.clock(), index, int(data.eventData), "nvml", "", {})
        if ev is not None:
            self._events.put(ev)

    def _poll_events(self) -> None:
        for _ in range(10_000):  # bounded: a flood of events cannot hold a collection forever
            try:
                self._wait_event(self._event_set, 0)
            except self.nvml.NVMLError_Timeout:
                return
            except self.nvml.NVMLError as exc:
                log.warning("NVML event poll failed: %s", exc)
                return

    def _free_event_set(self, event_set: Any) -> None:
        try:
            self.nvml.nvmlEventSetFree(event_set)
        except self.nvml.NVMLError as exc:
            log.debug("nvmlEventSetFree: %s", exc)


_VALUE_ATTR = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
# The integer members by value type, read in C; a double (0) goes through _field_number.
_INT_GETTERS: dict[int, Callable[[Any], Any] | None] = {
    kind: attrgetter(attr) if kind else None for kind, attr in _VALUE_ATTR.items()}
_ULL_GETTER = attrgetter("ullVal")  # an unknown value type reads as unsigned long long, as _field_number does


def _field_number(fv: Any) -> int | float | None:
    """The value of one nvmlFieldValue_t: a float for NVML_VALUE_TYPE_DOUBLE, else an int."""
    kind = getattr(fv, "valueType", 3)
    attr = _VALUE_ATTR.get(kind, "ullVal")
    got = getattr(fv.value, attr, None)
    if got is None and attr == "dVal":
        got = getattr(fv.value, "dval", None)
    if got is None:
        return None
    return float(got) if attr == "dVal" else int(got)

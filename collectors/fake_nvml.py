"""A fake NVML: the functions, constants and exception classes of ``pynvml`` (nvidia-ml-py), simulated.

A ``FakeNVML(scenario)`` instance is handed to the NVML collector in place of the ``pynvml`` module,
so the code under test is the code that runs on real GPUs. Every value is a pure function of (seed,
node name, GPU index, time): a clock that jumps days ahead (the demo's history backfill) sees the
same numbers as one that ticks, and counters never go backwards. Load follows absolute UTC time (so
nodes agree on the daily peak); faults and counters count from ``start``. This module never imports
``pynvml``; its exception classes are its own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from types import SimpleNamespace
from typing import Any

from .gpu_models import GpuModel, SimulatedGpu, Slot, get_model, mix64, stable_key, unit_hash
from .scenarios import Fault, Load, Scenario, ScenarioError, list_scenarios, load_scenario

__all__ = ["FakeNVML", "Fault", "Load", "NVMLError", "Scenario", "ScenarioError", "list_scenarios",
           "load_scenario"]

# Constants: the values of nvidia-ml-py 13.x.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED, NVML_ERROR_INVALID_ARGUMENT, NVML_ERROR_NOT_SUPPORTED = 1, 2, 3
NVML_ERROR_NO_PERMISSION, NVML_ERROR_ALREADY_INITIALIZED, NVML_ERROR_NOT_FOUND = 4, 5, 6
NVML_ERROR_INSUFFICIENT_SIZE, NVML_ERROR_DRIVER_NOT_LOADED, NVML_ERROR_TIMEOUT = 7, 9, 10
NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_FUNCTION_NOT_FOUND, NVML_ERROR_GPU_IS_LOST = 12, 13, 15
NVML_ERROR_RESET_REQUIRED, NVML_ERROR_NO_DATA, NVML_ERROR_UNKNOWN = 16, 21, 999
NVML_FEATURE_DISABLED, NVML_FEATURE_ENABLED = 0, 1
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_MEM, NVML_CLOCK_VIDEO = 0, 1, 2, 3
NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES = 0, 1
NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1
NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 0, 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_NVLINK_MAX_LINKS = 36
NVML_NVLINK_ERROR_DL_REPLAY, NVML_NVLINK_ERROR_DL_RECOVERY = 0, 1
NVML_NVLINK_ERROR_DL_CRC_FLIT, NVML_NVLINK_ERROR_DL_CRC_DATA, NVML_NVLINK_ERROR_DL_ECC_DATA = 2, 3, 4
NVML_FI_DEV_MEMORY_TEMP = 82
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX = 138
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 139
NVML_FI_DEV_NVLINK_LINK_COUNT = 91
NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL, NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL = 38, 45
NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL = 52, 59
NVML_FI_DEV_ECC_SBE_VOL_TOTAL, NVML_FI_DEV_ECC_DBE_VOL_TOTAL = 3, 4
NVML_FI_DEV_ECC_SBE_AGG_TOTAL, NVML_FI_DEV_ECC_DBE_AGG_TOTAL = 5, 6
NVML_FI_DEV_RETIRED_SBE, NVML_FI_DEV_RETIRED_DBE = 29, 30
NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION = 83
NVML_FI_DEV_PCIE_REPLAY_COUNTER = 94
NVML_FI_DEV_REMAPPED_COR, NVML_FI_DEV_REMAPPED_UNC = 142, 143
NVML_FI_DEV_REMAPPED_PENDING, NVML_FI_DEV_REMAPPED_FAILURE = 144, 145
NVML_FI_DEV_NVLINK_GET_STATE = 165
NVML_NVLINK_STATE_INACTIVE, NVML_NVLINK_STATE_ACTIVE = 0, 1
NVML_DEVICE_MIG_DISABLE, NVML_DEVICE_MIG_ENABLE = 0, 1
NVML_VALUE_TYPE_DOUBLE, NVML_VALUE_TYPE_UNSIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_LONG = 0, 1, 2
NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, NVML_VALUE_TYPE_SIGNED_LONG_LONG = 3, 4
NVML_VALUE_TYPE_SIGNED_INT, NVML_VALUE_TYPE_UNSIGNED_SHORT = 5, 6
NVML_PSTATE_0, NVML_PSTATE_8, NVML_PSTATE_UNKNOWN = 0, 8, 32
NVML_GPU_INSTANCE_ID_ANY = NVML_COMPUTE_INSTANCE_ID_ANY = 0xFFFFFFFF
nvmlEventTypeNone, nvmlEventTypeSingleBitEccError, nvmlEventTypeDoubleBitEccError = 0x0, 0x1, 0x2
nvmlEventTypePState, nvmlEventTypeXidCriticalError, nvmlEventTypeClock = 0x4, 0x8, 0x10
_REASONS = {"GpuIdle": 0x1, "ApplicationsClocksSetting": 0x2, "UserDefinedClocks": 0x2, "SwPowerCap": 0x4,
            "HwSlowdown": 0x8, "SyncBoost": 0x10, "SwThermalSlowdown": 0x20, "HwThermalSlowdown": 0x40,
            "HwPowerBrakeSlowdown": 0x80, "DisplayClockSetting": 0x100, "None": 0x0}
for _name, _bit in _REASONS.items():
    globals()[f"nvmlClocksEventReason{_name}"] = globals()[f"nvmlClocksThrottleReason{_name}"] = _bit
nvmlClocksEventReasonAll = 0x1FF
nvmlClocksThrottleReasonBoardLimit, nvmlClocksThrottleReasonReliability = 0x200, 0x400
nvmlClocksThrottleReasonAll = 0x7FF


class NVMLError(Exception):
    """Like pynvml's: ``NVMLError(value)`` returns the subclass for that value; ``.value`` is the code."""

    _valClassMapping: dict[int, type[NVMLError]] = {}
    _errcode_to_string = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported",
                          4: "Insufficient Permissions", 5: "Already Initialized", 6: "Not Found",
                          7: "Insufficient Size", 9: "Driver Not Loaded", 10: "Timeout",
                          12: "NVML Shared Library Not Found", 13: "Function Not Found",
                          15: "GPU is lost", 16: "GPU requires restart", 999: "Unknown Error"}
    value: int

    def __new__(cls, value: int = NVML_ERROR_UNKNOWN) -> NVMLError:
        if cls is NVMLError:
            cls = NVMLError._valClassMapping.get(value, cls)
        obj = Exception.__new__(cls)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NVMLError) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)


def _error_class(name: str, value: int) -> Any:
    def __new__(cls: type[NVMLError], *args: object) -> NVMLError:
        obj = Exception.__new__(cls)  # NVMLError.__new__(cls, value), inlined: fields raise these per tick
        obj.value = value
        return obj

    cls = type(f"NVMLError_{name}", (NVMLError,), {"__new__": __new__, "__module__": __name__})
    NVMLError._valClassMapping[value] = cls
    return cls


NVMLError_Uninitialized = _error_class("Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_InvalidArgument = _error_class("InvalidArgument", NVML_ERROR_INVALID_ARGUMENT)
NVMLError_NotSupported = _error_class("NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NoPermission = _error_class("NoPermission", NVML_ERROR_NO_PERMISSION)
NVMLError_AlreadyInitialized = _error_class("AlreadyInitialized", NVML_ERROR_ALREADY_INITIALIZED)
NVMLError_NotFound = _error_class("NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_InsufficientSize = _error_class("InsufficientSize", NVML_ERROR_INSUFFICIENT_SIZE)
NVMLError_DriverNotLoaded = _error_class("DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_Timeout = _error_class("Timeout", NVML_ERROR_TIMEOUT)
NVMLError_LibraryNotFound = _error_class("LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _error_class("FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _error_class("GpuIsLost", NVML_ERROR_GPU_IS_LOST)
NVMLError_ResetRequired = _error_class("ResetRequired", NVML_ERROR_RESET_REQUIRED)
NVMLError_NoData = _error_class("NoData", NVML_ERROR_NO_DATA)
NVMLError_Unknown = _error_class("Unknown", NVML_ERROR_UNKNOWN)

_M64 = (1 << 64) - 1
_MIB = 1 << 20
_floor = math.floor
# Field ids summing one NVLink error counter over all links -> nvmlDeviceGetNvLinkErrorCounter's counter.
_NVLINK_ERROR_FIELDS = {38: NVML_NVLINK_ERROR_DL_CRC_FLIT, 45: NVML_NVLINK_ERROR_DL_CRC_DATA,
                        52: NVML_NVLINK_ERROR_DL_REPLAY, 59: NVML_NVLINK_ERROR_DL_RECOVERY}
# ECC total field ids -> (uncorrected, aggregate), as nvmlDeviceGetTotalEccErrors takes them.
_ECC_FIELDS = {NVML_FI_DEV_ECC_SBE_VOL_TOTAL: (False, False), NVML_FI_DEV_ECC_DBE_VOL_TOTAL: (True, False),
               NVML_FI_DEV_ECC_SBE_AGG_TOTAL: (False, True), NVML_FI_DEV_ECC_DBE_AGG_TOTAL: (True, True)}
_RETIRED_FIELDS = {NVML_FI_DEV_RETIRED_SBE: NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
                   NVML_FI_DEV_RETIRED_DBE: NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR}
# Remapped-row field ids -> their position in nvmlDeviceGetRemappedRows' tuple.
_REMAP_FIELDS = {NVML_FI_DEV_REMAPPED_COR: 0, NVML_FI_DEV_REMAPPED_UNC: 1, NVML_FI_DEV_REMAPPED_PENDING: 2,
                 NVML_FI_DEV_REMAPPED_FAILURE: 3}


class _Handle:
    """An opaque device handle, the same object for the life of the FakeNVML (usable as a dict key)."""

    __slots__ = ("owner", "gpu", "mig")

    def __init__(self, owner: FakeNVML, gpu: SimulatedGpu, mig: int | None = None) -> None:
        self.owner, self.gpu, self.mig = owner, gpu, mig

    def __repr__(self) -> str:
        return f"<FakeNVML device {self.gpu.index}{'' if self.mig is None else f' mig {self.mig}'}>"


class _FieldUnion:
    """The ``value`` union of an nvmlFieldValue_t: one number, read through the member its
    ``valueType`` names (dVal, uiVal, ulVal, ullVal, sllVal, siVal, usVal)."""

    __slots__ = ("_v",)

    def __init__(self, v: int) -> None:
        self._v = v

    dVal = property(lambda self: float(self._v))
    uiVal = property(lambda self: self._v & 0xFFFFFFFF)
    ulVal = property(lambda self: self._v & _M64)
    ullVal = property(lambda self: self._v & _M64)
    sllVal = property(attrgetter("_v"))
    siVal = property(lambda self: self._v & 0x7FFFFFFF)
    usVal = property(lambda self: self._v & 0xFFFF)


class _Unsigned64(_FieldUnion):
    """A union holding 0 <= v < 2**64 (every counter): the 64-bit members are the number itself,
    read without masking (a C getter rather than a Python call per read)."""

    __slots__ = ()
    ulVal = ullVal = property(attrgetter("_v"))


class _Unsigned32(_Unsigned64):
    """A union holding 0 <= v < 2**32 (link states, temperatures, small counters): the 32-bit
    unsigned member is the number too."""

    __slots__ = ()
    uiVal = property(attrgetter("_v"))


# Unions are immutable: entries share one for each small value (every link state, every zero
# counter, every failed entry) instead of each building its own.
_SMALL = tuple(_Unsigned32(v) for v in range(256))
_ZERO = _SMALL[0]


def _union(v: int) -> _FieldUnion:
    if type(v) is int and v >= 0:
        if v < 256:
            return _SMALL[v]
        return _Unsigned32(v) if v <= 0xFFFFFFFF else _Unsigned64(v) if v <= _M64 else _FieldUnion(v)
    return _FieldUnion(v)


# The answers of a field that fails: its own entry says why, its value reads zero.
_NOT_SUPPORTED = (NVML_VALUE_TYPE_DOUBLE, NVML_ERROR_NOT_SUPPORTED, -1, _ZERO)
_INVALID_ARGUMENT = (NVML_VALUE_TYPE_DOUBLE, NVML_ERROR_INVALID_ARGUMENT, -1, _ZERO)


# Where each time-dependent field's answer sits in the numbers _field_numbers works out for one
# GPU and tick (the NVLink error totals follow, one per NVML_NVLINK_ERROR_DL_* counter 0..3).
_N_MEMORY_TEMP, _N_ECC_CORRECTED, _N_ECC_CORRECTED_AGGREGATE, _N_ECC_UNCORRECTED = 0, 1, 2, 3
_N_CORRECTED_PAGES, _N_REMAP_PENDING = 4, 5
_N_ENERGY, _N_PCIE_REPLAYS, _N_NVLINK_TX, _N_NVLINK_RX, _N_NVLINK_ERRORS = 6, 7, 8, 9, 10  # tick_counters()
_N_NVLINK_TX_ALL, _N_NVLINK_RX_ALL = 14, 15
# One field's answer as a request plans it: (value type, return code, position in the tick's
# numbers or -1, the value when it is fixed). Raises nothing: a field that fails has a fixed
# return code (every field's errors depend only on the model and the scope, never on the time).
_FieldSpec = tuple[int, int, int, "_FieldUnion"]
# A planned request: one (field id, scope, value type, return code, position, fixed value) per
# entry, and whether any entry needs the GPU's state (memory temperature).
_Plan = tuple[list[tuple[Any, Any, int, int, int, "_FieldUnion"]], bool]


class _FieldValue:
    """One nvmlFieldValue_t as nvmlDeviceGetFieldValues fills it (timestamps in microseconds). Only
    that method makes them, filling the slots itself (the hot path: no __init__ call)."""

    __slots__ = ("fieldId", "scopeId", "timestamp", "latencyUsec", "valueType", "nvmlReturn", "value")
    fieldId: int
    scopeId: int
    timestamp: int
    latencyUsec: int
    valueType: int
    nvmlReturn: int
    value: _FieldUnion


class FakeNVML:
    """Stands in for the ``pynvml`` module: same function names, signatures, constants and errors.

    ``scenario`` is a ``Scenario`` or a scenario name or path; scenario times are seconds after
    ``start`` (default: ``clock()`` now). ``seed`` and ``node_name`` make nodes of a fleet differ;
    ``gpu_count`` overrides the scenario's count (faults on GPUs past it wrap around). Simulated time
    has 1/16 s resolution. ``nvmlEventSetWait`` waits in real time for faults the scenario clock
    has reached.
    """

    def __init__(self, scenario: Scenario | str, *, clock: Callable[[], float] = time.time,
                 start: float | None = None, seed: int = 0, gpu_count: int | None = None,
                 node_name: str | None = None, clock_notifies: bool = False) -> None:
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        model = get_model(self.scenario.model)
        assert model is not None  # Scenario validated it
        self.model: GpuModel = model
        self._clock = clock
        # An injected clock may jump without telling: event waits then look again every 20 ms.
        # One whose owner calls clock_moved() after each jump is waited on like real time.
        self._clock_notifies = clock is time.time or clock_notifies
        self.start = clock() if start is None else float(start)
        self.seed, self.node_name = seed, node_name or ""
        count = self.scenario.gpus if gpu_count is None else gpu_count
        if not 1 <= count <= 64:
            raise ValueError(f"gpu_count must be between 1 and 64, got {count}")
        faults = sorted(self.scenario.faults, key=lambda f: f.at)
        node_key = stable_key(seed, self.node_name, "node")
        slots: dict[tuple[int, int], Slot] = {}
        self._gpus = []
        for i in range(count):
            key = stable_key(seed, self.node_name, i)
            job_key = node_key if self.scenario.load.shared_jobs else key
            mine = [f for f in faults if f.gpu % count == i]
            self._gpus.append(SimulatedGpu(model, i, key, job_key, self.start, self.scenario.load, mine,
                                           self.scenario.mig, slots))
        self._handles = {g.index: _Handle(self, g) for g in self._gpus}
        self._mig_handles = {g.index: [_Handle(self, g, n) for n in range(len(self.scenario.mig))]
                             for g in self._gpus}
        self._faults = [(f, self._gpus[f.gpu % count]) for f in faults]
        # (time, fault number, GPU, event type, event data): eventData is the XID, 0 for other types.
        self._events = [(f.at, n, g, nvmlEventTypeXidCriticalError, f.code or 0)
                        for n, (f, g) in enumerate(self._faults) if f.kind == "xid"]
        self._events += [(f.at, n, g, nvmlEventTypeDoubleBitEccError, 0)
                         for n, (f, g) in enumerate(self._faults) if f.kind == "xid" and f.code == 48]
        self._events.sort(key=lambda e: (e[0], e[1]))
        self._refs = 0
        self._cond = threading.Condition()
        self._boot_s = 3600 + unit_hash(node_key, 0) * 86400 * 20
        self._mig_on = bool(self.scenario.mig)
        self._field_specs = self._field_table()
        self._plans: dict[Any, _Plan] = {}

    # ---- for tests, the demo and benchmarks ---------------------------------------------------
    def now_t(self) -> float:
        """Scenario time now: seconds since ``start``, in 1/16 s steps."""
        return math.floor((self._clock() - self.start) * 16) / 16

    def speed_factor(self, index: int, t: float | None = None) -> float:
        """How fast GPU ``index`` (scenario index) computes at scenario time ``t`` (default now),
        relative to a healthy peer: 1.0 normally, 0.85 for the slow GPU (the ``factor`` parameter),
        lower while thermally or power throttled, 0.0 once lost, missing or dead."""
        g = self._gpus[index]
        t = self.now_t() if t is None else t
        if g.active("lost", t) or g.active("missing", t) or g.active("dead", t):
            return 0.0
        return float(g.state(t).factor)

    def faults_due(self, until_t: float | None = None) -> list[Fault]:
        """The scenario's faults whose time has come by ``until_t`` (default now), in time order."""
        until_t = self.now_t() if until_t is None else until_t
        return [f for f, _ in self._faults if f.at <= until_t]

    def kernel_log_lines(self, since_t: float = 0.0, until_t: float | None = None, *,
                         style: str = "dmesg") -> list[str]:
        """``NVRM: Xid`` kernel messages for XIDs with since_t < time <= until_t (default now), as
        ``dmesg`` prints them (``[ uptime] NVRM: …``) or as ``/dev/kmsg`` records (``style="kmsg"``).
        The first XID of a GPU is preceded by the driver's ``GPU at PCI:…: GPU-uuid`` line."""
        until_t = self.now_t() if until_t is None else until_t
        lines, seen = [], set()
        for seq, (f, g) in enumerate(self._faults):
            if f.kind != "xid" or f.at > until_t:
                continue
            first = g.index not in seen
            seen.add(g.index)
            if f.at <= since_t:
                continue
            msgs = g.xid_messages(f, first)
            usec = int((self._boot_s + f.at) * 1e6)
            for n, msg in enumerate(msgs):
                if style == "kmsg":
                    lines.append(f"4,{100000 + 10 * seq + n},{usec},-;{msg}")
                else:
                    lines.append(f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {msg}")
        return lines

    # ---- plumbing -----------------------------------------------------------------------------
    def _present(self, t: float) -> list[SimulatedGpu]:
        return [g for g in self._gpus if not g.active("missing", t)]

    def _system(self) -> float:
        if self._refs <= 0:
            raise NVMLError_Uninitialized()
        return self.now_t()

    def _dev(self, handle: Any, mig_ok: bool = False) -> tuple[SimulatedGpu, float]:
        """The GPU behind ``handle`` and the time, or the error NVML would give for it now."""
        if self._refs <= 0:
            raise NVMLError_Uninitialized()
        t = _floor((self._clock() - self.start) * 16) / 16  # now_t(), inlined: every call comes here
        if type(handle) is not _Handle or handle.owner is not self:
            raise NVMLError_InvalidArgument()
        if handle.mig is not None and not mig_ok:
            raise NVMLError_NotSupported()
        g = handle.gpu
        if g.can_fail:
            if g.active("lost", t) or g.active("missing", t):
                raise NVMLError_GpuIsLost()
            if g.active("nvml_timeout", t):
                raise NVMLError_Timeout()
        return g, t

    def _state(self, handle: Any) -> Any:
        """``g.state(t)`` for ``g, t = self._dev(handle)``: most calls of a tick come here."""
        g, t = self._dev(handle)
        last = g.last_state  # g.state(t)'s own first look, inlined
        return last[1] if last is not None and last[0] == t else g.state(t)

    @staticmethod
    def _need(supported: bool) -> None:
        if not supported:
            raise NVMLError_NotSupported()

    # ---- system -------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self._refs += 1

    def nvmlShutdown(self) -> None:
        self._system()
        self._refs -= 1
        with self._cond:
            self._cond.notify_all()

    def nvmlExceptionClass(self, nvmlErrorCode: int) -> type[NVMLError]:
        if nvmlErrorCode not in NVMLError._valClassMapping:
            raise ValueError(f"nvmlErrorCode {nvmlErrorCode} is not valid")
        return NVMLError._valClassMapping[nvmlErrorCode]

    def nvmlSystemGetDriverVersion(self) -> str:
        self._system()
        return self.scenario.driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._system()
        return self.scenario.cuda_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self._present(self._system()))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        present = self._present(self._system())
        if not 0 <= index < len(present):
            raise NVMLError_InvalidArgument()
        handle = self._handles[present[index].index]
        self._dev(handle)
        return handle

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> _Handle:
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in self._present(self._system()):
            if g.uuid == uuid:
                return self._handles[g.index]
        raise NVMLError_NotFound()

    # ---- identity -----------------------------------------------------------------------------
    def nvmlDeviceGetIndex(self, handle: Any) -> int:
        """Host-side, as in NVML: answers for a GPU that fell off the bus or times out, not a vanished one."""
        t = self._system()
        if not isinstance(handle, _Handle) or handle.owner is not self or handle.mig is not None:
            raise NVMLError_InvalidArgument()
        present = self._present(t)
        if handle.gpu not in present:
            raise NVMLError_GpuIsLost()
        return present.index(handle.gpu)

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        g, _ = self._dev(handle, mig_ok=True)
        return g.uuid if handle.mig is None else f"MIG-{g.uuid[4:-4]}{handle.mig:04x}"

    def nvmlDeviceGetName(self, handle: Any) -> str:
        self._dev(handle, mig_ok=True)
        return self.model.name + ("" if handle.mig is None else f" MIG {self.scenario.mig[handle.mig]}")

    def nvmlDeviceGetSerial(self, handle: Any) -> str:
        g, _ = self._dev(handle)
        self._need(self.model.serial)
        return g.serial

    def nvmlDeviceGetPciInfo(self, handle: Any) -> SimpleNamespace:
        """As in pynvml's struct, ``busId`` and ``busIdLegacy`` are bytes (b"00000000:18:00.0")."""
        g, _ = self._dev(handle)
        bus_id = f"00000000:{g.bus:02X}:00.0"
        return SimpleNamespace(busId=bus_id.encode(), busIdLegacy=bus_id[4:].encode(), domain=0, bus=g.bus,
                               device=0, pciDeviceId=self.model.pci_device_id, pciSubSystemId=0x16C110DE)

    nvmlDeviceGetPciInfo_v3 = nvmlDeviceGetPciInfo

    # ---- load ---------------------------------------------------------------------------------
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> SimpleNamespace:
        g, t = self._dev(handle, mig_ok=True)
        s = g.state(t)
        if handle.mig is not None:
            total = self.model.mig_profiles[self.scenario.mig[handle.mig]][1] * _MIB
            used = 13 * _MIB + sum(p[1] for p in s.procs if p[2] == handle.mig)
        else:
            total, used = self.model.memory_mib * _MIB, s.used
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> SimpleNamespace:
        s = self._state(handle)
        if self._mig_on:  # NVML reports no utilization while MIG is on
            raise NVMLError_NotSupported()
        return SimpleNamespace(gpu=round(100 * s.util), memory=round(100 * s.mem_util))

    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[SimpleNamespace]:
        g, t = self._dev(handle, mig_ok=True)
        none = NVML_GPU_INSTANCE_ID_ANY
        return [SimpleNamespace(pid=pid, usedGpuMemory=mem, gpuInstanceId=none if gi is None else gi + 1,
                                computeInstanceId=none if gi is None else 0)
                for pid, mem, gi in g.state(t).procs if handle.mig in (None, gi)]

    nvmlDeviceGetComputeRunningProcesses_v3 = nvmlDeviceGetComputeRunningProcesses

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        s = self._state(handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError_InvalidArgument()
        return round(s.temp)

    def nvmlDeviceGetFanSpeed(self, handle: Any) -> int:
        s = self._state(handle)
        if not self.model.fan:
            raise NVMLError_NotSupported()
        return round(min(100.0, max(30.0, 30 + 1.5 * (s.temp - 35))))

    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int:
        return round(self._state(handle).power * 1000)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int:
        return round(self._state(handle).limit * 1000)

    nvmlDeviceGetPowerManagementLimit = nvmlDeviceGetEnforcedPowerLimit

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int:
        self._dev(handle)
        return round(self.model.power_limit_w * 1000)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: Any) -> int:
        g, t = self._dev(handle)
        return g.energy_mj(t)

    def nvmlDeviceGetClockInfo(self, handle: Any, type: int) -> int:
        s = self._state(handle)
        if type == NVML_CLOCK_MEM:
            return int(s.mem_clock)
        if type not in (NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_VIDEO):
            raise NVMLError_InvalidArgument()
        return int(s.sm * (0.87 if type == NVML_CLOCK_VIDEO else 1.0) // 15 * 15)

    def nvmlDeviceGetMaxClockInfo(self, handle: Any, type: int) -> int:
        self._dev(handle)
        m = self.model
        if type == NVML_CLOCK_MEM:
            return m.mem_clock_max
        if type not in (NVML_CLOCK_GRAPHICS, NVML_CLOCK_SM, NVML_CLOCK_VIDEO):
            raise NVMLError_InvalidArgument()
        return int(m.sm_clock_max * (0.87 if type == NVML_CLOCK_VIDEO else 1.0) // 15 * 15)

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: Any) -> int:
        return int(self._state(handle).reasons)

    nvmlDeviceGetCurrentClocksThrottleReasons = nvmlDeviceGetCurrentClocksEventReasons

    def nvmlDeviceGetPerformanceState(self, handle: Any) -> int:
        return NVML_PSTATE_0 if self._state(handle).busy else NVML_PSTATE_8

    # ---- PCIe and NVLink ----------------------------------------------------------------------
    def nvmlDeviceGetPcieThroughput(self, device: Any, counter: int) -> int:
        g, t = self._dev(device)
        if counter not in (NVML_PCIE_UTIL_TX_BYTES, NVML_PCIE_UTIL_RX_BYTES):
            raise NVMLError_InvalidArgument()
        return g.pcie_kbs(t, rx=counter == NVML_PCIE_UTIL_RX_BYTES)

    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int:
        g, t = self._dev(handle)
        return g.pcie_replays(t)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int:
        idle = self.model.pcie_idle_downshift and not self._state(handle).busy
        return 1 if idle else self.model.pcie_gen

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int:
        self._dev(handle)
        return self.model.pcie_gen

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int:
        self._dev(handle)
        return self.model.pcie_width

    nvmlDeviceGetMaxPcieLinkWidth = nvmlDeviceGetCurrPcieLinkWidth

    def _link(self, device: Any, link: int) -> tuple[SimulatedGpu, float]:
        g, t = self._dev(device)
        self._need(self.model.nvlinks > 0)
        if not 0 <= link < self.model.nvlinks:
            raise NVMLError_InvalidArgument()
        return g, t

    def nvmlDeviceGetNvLinkState(self, device: Any, link: int) -> int:
        self._link(device, link)
        return NVML_FEATURE_ENABLED

    def nvmlDeviceGetNvLinkErrorCounter(self, device: Any, link: int, counter: int) -> int:
        g, t = self._link(device, link)
        if not 0 <= counter <= NVML_NVLINK_ERROR_DL_ECC_DATA:
            raise NVMLError_InvalidArgument()
        return g.nvlink_errors(t, link, counter)

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: Sequence[Any]) -> list[_FieldValue]:
        """Supports memory temperature, energy, the PCIe replay counter, ECC totals, retired pages,
        remapped rows and NVLink (link count, per-link state, error totals, throughput), each from
        the same simulation as the function that reads it alone; any other field answers
        NVML_ERROR_NOT_SUPPORTED in its own entry, as NVML does. Throughput is cumulative KiB of the
        link in ``scopeId``, as in nvml.h: pass ``(fieldId, 0xFFFFFFFF)`` for the sum over all
        links; a bare field id means link 0 (for link state too)."""
        g, t = self._dev(handle)
        stamp = int((self.start + t) * 1e6)
        entries, needs_state = self._field_plan(fieldIds)
        numbers = self._field_numbers(g, t, needs_state)
        out = []
        new, small = object.__new__, _SMALL
        for fid, scope, vtype, ret, position, value in entries:
            # Every entry is a new object (callers may change theirs), its slots filled here rather
            # than through __init__: 37 entries per GPU and tick.
            fv = new(_FieldValue)
            fv.fieldId = fid
            fv.scopeId = scope
            fv.timestamp = stamp
            fv.latencyUsec = 0
            fv.valueType = vtype
            fv.nvmlReturn = ret
            if position >= 0:
                v = numbers[position]
                value = small[v] if 0 <= v < 256 else _union(v)
            fv.value = value
            out.append(fv)
        return out

    def _field_numbers(self, g: SimulatedGpu, t: float, with_state: bool) -> list[int]:
        """Every time-dependent field's answer for GPU ``g`` at ``t``, laid out as the ``_N_*``
        positions say, worked out once for the whole request: each counter, ECC count and NVLink
        figure is read once, not once per field that shows it. ``with_state``: the memory
        temperature, which needs the GPU's state, is asked for."""
        temp = round(g.state(t).temp + g.mem_temp_offset) if with_state else 0
        corrected, corrected_aggregate, uncorrected = g.ecc_counts(t)
        numbers = [temp, corrected, corrected_aggregate, uncorrected, corrected_aggregate // 100,
                   1 if uncorrected else 0]
        numbers += g.tick_counters(t)
        links = self.model.nvlinks
        numbers += (links * numbers[_N_NVLINK_TX], links * numbers[_N_NVLINK_RX])
        return numbers

    def _field_plan(self, fieldIds: Sequence[Any]) -> _Plan:
        """How each requested field is answered (``_Plan``). Remembered per request, which a
        collector repeats every cycle: the plan depends on the request and the model, not the time."""
        key = fieldIds if type(fieldIds) is tuple else None
        plan = self._plans.get(key) if key is not None else None
        if plan is not None:
            return plan
        entries = []
        for f in fieldIds:
            try:
                fid, scope = f
            except TypeError:
                fid, scope = f, 0
            spec = self._field_specs.get(fid)
            vtype, ret, position, value = spec(scope) if spec is not None else _NOT_SUPPORTED
            entries.append((fid, scope, vtype, ret, position, value))
        plan = (entries, any(e[4] == _N_MEMORY_TEMP for e in entries))
        if key is not None:
            try:
                if len(self._plans) > 64:
                    self._plans.clear()
                self._plans[key] = plan
            except TypeError:  # a request holding lists: planned again next time
                pass
        return plan

    def _field_table(self) -> dict[int, Callable[[Any], _FieldSpec]]:
        """For each field id this model supports, its answer for a scope (``_FieldSpec``), so a
        field costs one dict lookup rather than a chain of comparisons; any other id answers
        NotSupported."""
        m, ull, uint = self.model, NVML_VALUE_TYPE_UNSIGNED_LONG_LONG, NVML_VALUE_TYPE_UNSIGNED_INT

        def at(vtype: int, position: int) -> Callable[[Any], _FieldSpec]:
            return lambda _scope: (vtype, NVML_SUCCESS, position, _ZERO)

        specs: dict[int, Callable[[Any], _FieldSpec]] = {}
        if m.memory_temp:
            specs[NVML_FI_DEV_MEMORY_TEMP] = at(uint, _N_MEMORY_TEMP)
        specs[NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION] = at(ull, _N_ENERGY)
        specs[NVML_FI_DEV_PCIE_REPLAY_COUNTER] = at(uint, _N_PCIE_REPLAYS)
        if m.ecc:  # as nvmlDeviceGetTotalEccErrors: (uncorrected, aggregate) -> its count
            for fid, (uncorrected, aggregate) in _ECC_FIELDS.items():
                specs[fid] = at(ull, _N_ECC_UNCORRECTED if uncorrected else _N_ECC_CORRECTED_AGGREGATE
                                if aggregate else _N_ECC_CORRECTED)
        if m.ecc and not m.row_remapping:  # as _retired_count
            specs[NVML_FI_DEV_RETIRED_SBE] = at(ull, _N_CORRECTED_PAGES)
            specs[NVML_FI_DEV_RETIRED_DBE] = at(ull, _N_ECC_UNCORRECTED)
        if m.ecc and m.row_remapping:  # as _remapped
            specs[NVML_FI_DEV_REMAPPED_COR] = at(uint, _N_CORRECTED_PAGES)
            specs[NVML_FI_DEV_REMAPPED_UNC] = at(uint, _N_ECC_UNCORRECTED)
            specs[NVML_FI_DEV_REMAPPED_PENDING] = at(uint, _N_REMAP_PENDING)
            specs[NVML_FI_DEV_REMAPPED_FAILURE] = lambda _scope: (uint, NVML_SUCCESS, -1, _ZERO)
        if m.nvlinks > 0:
            def link_state(scope: Any) -> _FieldSpec:
                if not 0 <= scope < m.nvlinks:
                    return _INVALID_ARGUMENT
                return uint, NVML_SUCCESS, -1, _union(NVML_NVLINK_STATE_ACTIVE)

            def throughput(one: int, every: int) -> Callable[[Any], _FieldSpec]:
                def spec(scope: Any) -> _FieldSpec:
                    if scope == 0xFFFFFFFF:
                        return ull, NVML_SUCCESS, every, _ZERO
                    return (ull, NVML_SUCCESS, one, _ZERO) if 0 <= scope < m.nvlinks else _INVALID_ARGUMENT
                return spec

            specs[NVML_FI_DEV_NVLINK_LINK_COUNT] = lambda _scope: (uint, NVML_SUCCESS, -1, _union(m.nvlinks))
            specs[NVML_FI_DEV_NVLINK_GET_STATE] = link_state
            for fid, counter in _NVLINK_ERROR_FIELDS.items():
                specs[fid] = at(ull, _N_NVLINK_ERRORS + counter)
            specs[NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX] = throughput(_N_NVLINK_TX, _N_NVLINK_TX_ALL)
            specs[NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX] = throughput(_N_NVLINK_RX, _N_NVLINK_RX_ALL)
        return specs

    # ---- memory errors ------------------------------------------------------------------------
    def nvmlDeviceGetEccMode(self, handle: Any) -> list[int]:
        self._dev(handle)
        self._need(self.model.ecc)
        return [NVML_FEATURE_ENABLED, NVML_FEATURE_ENABLED]

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        g, t = self._dev(handle)
        self._need(self.model.ecc)
        if errorType not in (0, 1) or counterType not in (0, 1):
            raise NVMLError_InvalidArgument()
        return self._ecc(g, t, errorType == NVML_MEMORY_ERROR_TYPE_UNCORRECTED, counterType == NVML_AGGREGATE_ECC)

    def _ecc(self, g: SimulatedGpu, t: float, uncorrected: bool, aggregate: bool) -> int:
        self._need(self.model.ecc)
        return g.ecc(t, uncorrected=uncorrected, aggregate=aggregate)

    def nvmlDeviceGetRetiredPages(self, device: Any, sourceFilter: int) -> list[int]:
        """Pre-Ampere GPUs only (V100); later ones remap rows instead and raise NotSupported here."""
        g, t = self._dev(device)
        n = self._retired_count(g, t, sourceFilter)
        return [(mix64(g.key ^ (sourceFilter << 8) ^ i) % 0x7FFFFF) << 12 for i in range(n)]

    def _retired_count(self, g: SimulatedGpu, t: float, cause: int) -> int:
        self._need(self.model.ecc and not self.model.row_remapping)
        if cause == NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR:
            return g.ecc(t, uncorrected=True, aggregate=True)
        if cause == NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS:
            return g.ecc(t, uncorrected=False, aggregate=True) // 100
        raise NVMLError_InvalidArgument()

    def nvmlDeviceGetRemappedRows(self, device: Any) -> tuple[int, int, int, int]:
        """(correctable, uncorrectable, pending, failure): an uncorrectable error leaves a remap pending."""
        g, t = self._dev(device)
        return self._remapped(g, t)

    def _remapped(self, g: SimulatedGpu, t: float) -> tuple[int, int, int, int]:
        self._need(self.model.ecc and self.model.row_remapping)
        _, corrected, unc = g.ecc_counts(t)
        return (corrected // 100, unc, 1 if unc else 0, 0)

    # ---- MIG ----------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, device: Any) -> list[int]:
        self._dev(device)
        if not self.model.mig_profiles:
            raise NVMLError_NotSupported()
        mode = NVML_DEVICE_MIG_ENABLE if self._mig_on else NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: Any) -> int:
        self._dev(device)
        self._need(bool(self.model.mig_profiles))
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: Any, index: int) -> _Handle:
        g, _ = self._dev(device)
        self._need(bool(self.model.mig_profiles))
        if not 0 <= index < 7:
            raise NVMLError_InvalidArgument()
        if index >= len(self.scenario.mig):
            raise NVMLError_NotFound()
        return self._mig_handles[g.index][index]

    def nvmlDeviceIsMigDeviceHandle(self, device: Any) -> int:
        self._dev(device, mig_ok=True)
        return int(device.mig is not None)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice: Any) -> _Handle:
        g, _ = self._dev(migDevice, mig_ok=True)
        if migDevice.mig is None:
            raise NVMLError_InvalidArgument()
        return self._handles[g.index]

    def nvmlDeviceGetGpuInstanceId(self, device: Any) -> int:
        self._dev(device, mig_ok=True)
        if device.mig is None:
            raise NVMLError_InvalidArgument()
        return int(device.mig) + 1

    def nvmlDeviceGetComputeInstanceId(self, device: Any) -> int:
        self.nvmlDeviceGetGpuInstanceId(device)
        return 0

    # ---- events -------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> SimpleNamespace:
        # As with NVML, a set sees only events that happen after it was created: an agent that
        # restarts is not told about yesterday's XIDs again.
        return SimpleNamespace(registered={}, delivered=set(), freed=False, since=self._system())

    def nvmlDeviceGetSupportedEventTypes(self, handle: Any) -> int:
        self._dev(handle)
        ecc = nvmlEventTypeSingleBitEccError | nvmlEventTypeDoubleBitEccError if self.model.ecc else 0
        return ecc | nvmlEventTypePState | nvmlEventTypeXidCriticalError | nvmlEventTypeClock

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        """Registering for types the GPU does not support raises NotSupported, as in NVML."""
        g, _ = self._dev(handle)
        if eventTypes & ~self.nvmlDeviceGetSupportedEventTypes(handle):
            raise NVMLError_NotSupported()
        if eventSet.freed:
            raise NVMLError_InvalidArgument()
        with self._cond:
            eventSet.registered[g.index] = eventSet.registered.get(g.index, 0) | eventTypes

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> SimpleNamespace:
        """The next due event of a registered GPU (each once per set, if it happened after the set
        was created);
        NVMLError_Timeout after ``timeoutms`` of real time when none is due. XID 48 also raises a
        DoubleBitEccError event for sets registered for it."""
        deadline = time.monotonic() + max(timeoutms, 0) / 1000
        with self._cond:
            while True:
                t = self._system()
                if eventSet.freed:
                    raise NVMLError_InvalidArgument()
                next_at = math.inf
                for at, n, g, etype, data in self._events:
                    if at > t:
                        next_at = at
                        break
                    if at < eventSet.since:
                        continue
                    if (n, etype) not in eventSet.delivered and eventSet.registered.get(g.index, 0) & etype:
                        eventSet.delivered.add((n, etype))
                        return SimpleNamespace(device=self._handles[g.index], eventType=etype, eventData=data,
                                               gpuInstanceId=NVML_GPU_INSTANCE_ID_ANY,
                                               computeInstanceId=NVML_COMPUTE_INSTANCE_ID_ANY)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise NVMLError_Timeout()
                if self._clock_notifies:  # sleep until the next event is due (or the clock jumps)
                    self._cond.wait(min(remaining, max(next_at - t, 0.001)))
                else:  # an injected clock can move without telling us
                    self._cond.wait(min(remaining, 0.02))

    nvmlEventSetWait = nvmlEventSetWait_v2

    def clock_moved(self) -> None:
        """Tell event waits that the injected clock jumped (``clock_notifies=True``)."""
        with self._cond:
            self._cond.notify_all()

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        with self._cond:
            eventSet.freed = True
            self._cond.notify_all()


# The module's constants and exception classes are also attributes of FakeNVML, as on pynvml.
for _name, _value in list(globals().items()):
    if _name.startswith(("NVML_", "NVMLError", "nvmlEventType", "nvmlClocks")):
        setattr(FakeNVML, _name, _value)

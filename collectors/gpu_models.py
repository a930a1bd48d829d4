"""GPU models the fake NVML simulates: their specifications, and how one GPU behaves over time.

Specifications are what ``nvidia-smi -q`` reports on the real boards (memory in MiB as NVML counts
it, default power limits, maximum and idle clocks, PCIe generation and width, NVLink link counts,
MIG profiles with their compute slices and memory) and what each board does not support.
``SimulatedGpu`` turns a model, a load curve and faults into readings that are pure functions of
time: counters are closed-form integrals, so a clock that jumps days ahead costs nothing.
"""

from __future__ import annotations

import hashlib
import math
import threading
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .scenarios import Fault, Load


@dataclass(frozen=True)
class GpuModel:
    key: str  # the short name scenario files use (``H100``)
    name: str  # what nvmlDeviceGetName returns
    memory_mib: int
    power_limit_w: float  # default (and maximum) enforced limit
    power_min_w: float  # lowest limit the board accepts
    idle_w: float
    sm_clock_max: int  # MHz
    sm_clock_idle: int
    mem_clock_max: int
    mem_clock_idle: int
    pcie_gen: int
    pcie_width: int
    pci_device_id: int
    bus_ids: tuple[int, ...]  # PCI bus numbers of GPUs 0..n on a typical server
    nvlinks: int = 0
    nvlink_gbps: float = 0.0  # per link and direction, GB/s
    ecc: bool = True
    row_remapping: bool = True  # Ampere and later remap rows; older GPUs retire pages
    memory_temp: bool = True  # HBM boards report NVML_FI_DEV_MEMORY_TEMP; GDDR boards do not
    fan: bool = False  # SXM and passively cooled boards report no fan speed
    serial: bool = True  # GeForce boards have no serial number in NVML
    pcie_idle_downshift: bool = False  # consumer boards drop to PCIe gen 1 when idle
    temp_rise_c: float = 38.0  # core temperature rise from idle to full power
    cuda_capability: tuple[int, int] = (9, 0)
    mig_profiles: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # name -> (slices, MiB)

    def bus_id(self, index: int) -> int:
        if index < len(self.bus_ids):
            return self.bus_ids[index]
        return (self.bus_ids[-1] + 0x11 * (index - len(self.bus_ids) + 1)) % 0x100


_HGX_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)  # DGX/HGX H100 and H200
_H100_MIG = {"1g.10gb": (1, 9984), "1g.20gb": (1, 20096), "2g.20gb": (2, 20096),
             "3g.40gb": (3, 40320), "4g.40gb": (4, 40320), "7g.80gb": (7, 80896)}

MODELS: Mapping[str, GpuModel] = MappingProxyType({m.key: m for m in (
    GpuModel("H100", "NVIDIA H100 80GB HBM3", 81559, 700, 200, 70, 1980, 345, 2619, 2619, 5, 16,
             0x233010DE, _HGX_BUSES, nvlinks=18, nvlink_gbps=25.0, mig_profiles=_H100_MIG),
    GpuModel("H200", "NVIDIA H200", 143771, 700, 200, 75, 1980, 345, 3201, 3201, 5, 16,
             0x233510DE, _HGX_BUSES, nvlinks=18, nvlink_gbps=25.0, temp_rise_c=36.0,
             mig_profiles={"1g.18gb": (1, 16384), "1g.35gb": (1, 32768), "2g.35gb": (2, 32768),
                           "3g.71gb": (3, 69632), "4g.71gb": (4, 69632), "7g.141gb": (7, 139264)}),
    GpuModel("A100", "NVIDIA A100-SXM4-80GB", 81920, 400, 100, 60, 1410, 210, 1593, 1593, 4, 16,
             0x20B210DE, (0x07, 0x0F, 0x47, 0x4E, 0x87, 0x90, 0xB7, 0xBD), nvlinks=12,
             nvlink_gbps=25.0, temp_rise_c=34.0, cuda_capability=(8, 0),
             mig_profiles={"1g.10gb": (1, 9728), "1g.20gb": (1, 19968), "2g.20gb": (2, 19968),
                           "3g.40gb": (3, 40192), "4g.40gb": (4, 40192), "7g.80gb": (7, 80384)}),
    GpuModel("L40S", "NVIDIA L40S", 46068, 350, 100, 35, 2520, 210, 9001, 405, 4, 16, 0x26B910DE,
             (0x17, 0x31, 0x4B, 0x65, 0x98, 0xB1, 0xCA, 0xE3), memory_temp=False, temp_rise_c=40.0,
             cuda_capability=(8, 9)),
    GpuModel("RTX4090", "NVIDIA GeForce RTX 4090", 24564, 450, 150, 20, 3120, 210, 10501, 405, 4, 16,
             0x268410DE, (0x01, 0x21, 0x41, 0x61, 0x81, 0xA1, 0xC1, 0xE1), ecc=False,
             memory_temp=False, fan=True, serial=False, pcie_idle_downshift=True, temp_rise_c=35.0,
             cuda_capability=(8, 9)),
    GpuModel("V100", "Tesla V100-SXM2-32GB", 32768, 300, 150, 40, 1530, 135, 877, 877, 3, 16,
             0x1DB510DE, (0x1A, 0x1B, 0x3D, 0x3E, 0x88, 0x89, 0xB1, 0xB2), nvlinks=6,
             nvlink_gbps=25.0, row_remapping=False, temp_rise_c=36.0, cuda_capability=(7, 0)),
)})

_ALIASES = {"H100-SXM5": "H100", "H100-SXM": "H100", "H200-SXM": "H200", "A100-SXM4": "A100",
            "RTX-4090": "RTX4090", "4090": "RTX4090"}


def get_model(name: str) -> GpuModel | None:
    """The model for a short name, an alias or the full NVML name, case-insensitive; None if unknown."""
    wanted = name.strip().upper()
    wanted = _ALIASES.get(wanted, wanted)
    for model in MODELS.values():
        if wanted in (model.key.upper(), model.name.upper()):
            return model
    return None


# ---- deterministic randomness -----------------------------------------------------------------
_M64 = (1 << 64) - 1
_TAU = 2 * math.pi
_MIB = 1 << 20
IDLE, SW_POWER_CAP, SW_THERMAL, HW_THERMAL = 0x1, 0x4, 0x20, 0x40  # clock-event reason bits


def mix64(x: int) -> int:
    """splitmix64's finalizer: a fast, well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def unit_hash(key: int, a: int, b: int = 0) -> float:
    """A uniform number in [0, 1) that depends only on its arguments."""
    return mix64(key ^ mix64((a * 0x100000001B3 + b) & _M64)) / 18446744073709551616.0


def stable_key(*parts: object) -> int:
    """A 64-bit key from plain values (seed, node name, index), the same in every process."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def smooth_noise(key: int, a: float, knot: float) -> float:
    """Deterministic noise in [-1, 1]: a random value every ``knot`` seconds, eased in between."""
    x = a / knot
    k = math.floor(x)
    f = x - k
    f = f * f * (3 - 2 * f)
    v0, v1 = unit_hash(key, k, 7), unit_hash(key, k + 1, 7)
    return 2 * (v0 + (v1 - v0) * f) - 1


# mix64((k * 0x100000001B3 + 7) & _M64), the half of a noise knot's unit_hash(key, k, 7) that does
# not depend on the key: every GPU and noise stream of a process shares it at knot k. A memo of a
# pure function (bounded), so it holds no state a tick could see.
_KNOT_INNER: dict[int, int] = {}


def _knot_value(key: int, k: int) -> float:
    """unit_hash(key, k, 7), the same number, with the key-free half remembered and mix64 inlined."""
    inner = _KNOT_INNER.get(k)
    if inner is None:
        inner = mix64((k * 0x100000001B3 + 7) & _M64)
        if len(_KNOT_INNER) >= 4096:
            _KNOT_INNER.clear()
        _KNOT_INNER[k] = inner
    x = ((key ^ inner) + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return (x ^ (x >> 31)) / 18446744073709551616.0


class NoiseStream:
    """``smooth_noise(key, a, knot)`` for one (key, knot): the same numbers, cheaper per new tick.

    It keeps the two knot values it last eased between; time moving on by one knot (the common
    case: a collector's next tick) reuses the later one as the new earlier one. The values are a pure
    function of (key, knot index), so which ones happen to be kept never changes an answer (going
    back in time just hashes again). Kept as one tuple, swapped whole, so threads never see half
    an update."""

    __slots__ = ("key", "knot", "_kept")

    def __init__(self, key: int, knot: float) -> None:
        self.key, self.knot = key, knot
        self._kept: tuple[int, float, float] = (-(1 << 62), 0.0, 0.0)  # (k, value at k, value at k + 1)

    def at(self, a: float) -> float:
        x = a / self.knot
        k = math.floor(x)
        f = x - k
        f = f * f * (3 - 2 * f)
        kept_k, v0, v1 = self._kept
        if k != kept_k:
            v0 = v1 if k == kept_k + 1 else _knot_value(self.key, k)
            v1 = _knot_value(self.key, k + 1)
            self._kept = (k, v0, v1)
        return 2 * (v0 + (v1 - v0) * f) - 1


# The driver's words after "NVRM: Xid (PCI:0000:18:00): 79, pid=…, name=…, " for common XIDs.
_XID_TEXT = {
    13: "Graphics SM Warp Exception on (GPC 2, TPC 1, SM 0): Out Of Range Address",
    31: "Ch 00000018, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_3 faulted @ 0x7f1c_20000000. "
        "Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
    43: "Ch 00000010",
    48: "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 5, "
        "subpartition 1.",
    63: "Row Remapper: New row marked for remapping, reset gpu to activate.",
    74: "NVLink: fatal error detected on link 3(0x0, 0x0, 0x10000, 0x0, 0x0, 0x0, 0x0)",
    79: "GPU has fallen off the bus.",
    92: "High single-bit ECC error rate",
    94: "Contained: SM (0x1). RST: No, D-RST: No",
    95: "Uncontained: FBHUB. RST: Yes, D-RST: No",
    119: "Timeout after 6s of waiting for RPC response from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL).",
}
Slot = tuple[bool, float, float, float, float, int, int]  # see SimulatedGpu.slot


class SimulatedGpu:
    """One GPU of ``model`` under ``load`` and ``faults``; ``t`` is seconds after ``start`` (epoch).

    Load follows absolute time, job slot by job slot (``slots`` is shared by the GPUs of a node so
    a node-wide job is drawn once); faults and counters count from ``start``.
    """

    def __init__(self, model: GpuModel, index: int, key: int, job_key: int, start: float, load: Load,
                 faults: list[Fault], mig: tuple[str, ...], slots: dict[tuple[int, int], Slot]) -> None:
        self.model, self.index, self.key, self.job_key, self.start = model, index, key, job_key, start
        self.load, self.faults, self.mig, self._slots = load, faults, mig, slots
        hexs = f"{mix64(key):016x}{mix64(key ^ 1):016x}"
        self.uuid = f"GPU-{hexs[:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:32]}"
        self.serial = str(1650000000000 + mix64(key ^ 2) % 9999999999)
        self.bus = model.bus_id(index)
        self._phase = unit_hash(key, 1) * _TAU
        self._temp_base = 27 + 7 * unit_hash(key, 2)
        self.mem_temp_offset = 3 + 5 * unit_hash(key, 3)
        self._pcie_kbs = 2e5 + 1e6 * unit_hash(key, 4)
        self._energy0_j = 86400 * (1 + 29 * unit_hash(key, 5)) * (model.idle_w + 0.4 * model.power_limit_w)
        self._nvlink0_kib = int(unit_hash(key, 6) * 1e11)
        self._nvlink_error_rates: dict[tuple[int, int], float] = {}
        self._nvlink_total_rates: dict[int, tuple[float, ...]] = {}  # counter -> the links' non-zero rates
        self._all_link_rates: tuple[tuple[float, ...], ...] | None = None  # the same for counters 0..3
        self._replay_rate = 2e-4 * unit_hash(key, 9) if unit_hash(key, 8) < 0.15 else 0.0
        self._ecc_corr0 = int(40 * unit_hash(key, 11)) if unit_hash(key, 10) < 0.25 else 0
        self._span_w = 0.93 * model.power_limit_w - model.idle_w  # power above idle at full load
        self._cum = [0.0]  # ∫ util from start to the end of each whole job slot since start
        self._lock = threading.Lock()
        # state() for the last t asked, (t, state): FakeNVML._state reads it too, sparing a call.
        self.last_state: tuple[float, SimpleNamespace] | None = None
        self._counters: tuple[float, tuple[float, float]] | None = None  # counters() for the last t asked
        self._ecc_counts: tuple[float, tuple[int, int, int]] | None = None  # ecc_counts() for the last t
        self._pcie: tuple[float, tuple[int, ...]] | None = None  # pcie_kbs() both ways, for the last t
        self._ecc_rates = [(f.at, f.end, f.param("per_hour") or 0.0) for f in faults if f.kind == "ecc_corrected"]
        self.windows = {kind: [(f.at, f.end) for f in faults if f.kind == kind]
                        for kind in ("missing", "nvml_timeout", "thermal", "powercap", "slow")}
        # A GPU that fell off the bus (79) or stopped working (95) stays so until the fault's
        # duration ends: the node was power-cycled or the GPU reset (forever by default).
        def until(f: Fault) -> float:
            return f.at + (f.duration if f.duration is not None else math.inf)

        self.windows["lost"] = [(f.at, until(f)) for f in faults if f.kind == "xid" and f.code == 79]
        self.windows["dead"] = [(f.at, until(f)) for f in faults if f.kind == "xid" and f.code == 95]
        # Whether any fault can make NVML refuse this GPU (lost, missing, timing out): most GPUs of
        # most scenarios never are, and skip those window checks on every call.
        self.can_fail = any(self.windows[kind] for kind in ("lost", "missing", "nvml_timeout"))
        self._unc_times = sorted(f.at for f in faults if f.kind == "xid" and f.code in (48, 94, 95))
        self._segments = self._fixed_power_segments()
        self._segment_starts = [s[0] for s in self._segments]
        # Per-tick work, prepared once: the noise streams state() and pcie_kbs() read, the load
        # cycle's angular speed, and the faults that shape state() (kind, start, end, fault).
        self._noise_load = NoiseStream(key, 10.0).at
        self._noise_jitter = NoiseStream(key ^ 3, 7.0).at
        self._noise_temp = NoiseStream(key ^ 5, 30.0).at
        self._noise_pcie = (NoiseStream(key ^ 11, 5.0).at, NoiseStream(key ^ 12, 5.0).at)
        self._cycle_w = _TAU / load.cycle_period_s
        self._temp_span_w = model.power_limit_w - model.idle_w
        self._state_faults = [(f.kind, f.at, f.end, f) for f in faults if f.kind in ("slow", "powercap", "thermal")]

    def _cap_w(self, f: Fault) -> float:
        return f.param("limit_w") or 0.7 * self.model.power_limit_w

    def _fixed_power_segments(self) -> list[tuple[float, float, float, float]]:
        """Stretches where a fault fixes utilization and power: (start, end, util, watts). A lost,
        missing or dead GPU idles; a capped one runs at its cap; an overheating one runs hot."""
        idle = self.model.idle_w
        rules = [("lost", 0.0, idle), ("missing", 0.0, idle), ("dead", 0.0, idle), ("powercap", 0.92, 0.0),
                 ("thermal", 0.85, idle + 0.85 * self._span_w)]
        bounds = sorted({t for kind, _, _ in rules for w in self.windows[kind] for t in w if t < math.inf})
        segments = []
        for a, b in zip(bounds, [*bounds[1:], math.inf], strict=False):
            for kind, util, watts in rules:
                if self.active(kind, a):
                    if kind == "powercap":
                        watts = min(self._cap_w(f) for f in self.faults
                                    if f.kind == kind and f.at <= a < f.end)
                    segments.append((a, b, util, watts))
                    break
        return segments

    def active(self, kind: str, t: float) -> bool:
        for t0, t1 in self.windows[kind]:  # a plain loop: most lists are empty, and this runs per call
            if t0 <= t < t1:
                return True
        return False

    def slot(self, a: float) -> Slot:
        """The job slot holding absolute time ``a``: busy?, level, cycle amplitude, memory share,
        memory-bus share, process count, first pid."""
        ld = self.load
        k = math.floor(a / ld.job_slot_s)
        s = self._slots.get((self.job_key, k))
        if s is None:
            jk, hour = self.job_key, (k * ld.job_slot_s / 3600.0) % 24
            p = ld.busy_fraction + ld.daily_amplitude * math.cos(_TAU * (hour - ld.peak_hour_utc) / 24)
            if ld.weekend_dip and (math.floor(k * ld.job_slot_s / 86400) + 3) % 7 >= 5:  # 1970-01-01 was a Thursday
                p -= ld.weekend_dip
            busy = unit_hash(jk, k, 1) < p
            level = ld.level_min + (ld.level_max - ld.level_min) * unit_hash(jk, k, 2)
            amp = min(ld.cycle_amplitude, level - 0.02, 1 - level) if busy else 0.0
            if busy and unit_hash(jk, k, 7) < ld.idle_allocated_fraction:
                level, amp = 0.0, 0.0  # allocated, processes and memory held, no kernels
            s = (busy, level, amp, 0.35 + 0.6 * unit_hash(jk, k, 3), 0.25 + 0.5 * unit_hash(jk, k, 4),
                 1 + (unit_hash(jk, k, 5) < 0.3), 1000 + int(unit_hash(jk, k, 6) * 3_000_000))
            if len(self._slots) > 50_000:
                self._slots.clear()
            self._slots[(self.job_key, k)] = s
        return s

    def _util_integral(self, a0: float, a1: float) -> float:
        """∫ util over absolute times [a0, a1] within one job slot, in closed form."""
        busy, level, amp, *_ = self.slot(a0)
        if not busy:
            return 0.0
        w = _TAU / self.load.cycle_period_s
        return level * (a1 - a0) - amp / w * (math.cos(w * a1 + self._phase) - math.cos(w * a0 + self._phase))

    def _util_seconds(self, t: float) -> float:
        """∫ util from scenario time 0 to t >= 0, ignoring faults."""
        size = self.load.job_slot_s
        a, k0 = self.start + t, math.floor(self.start / size)
        k = math.floor(a / size)
        if k == k0:
            return self._util_integral(self.start, a)
        if len(self._cum) <= k - k0:  # a slot not summed yet (once an hour): under the lock
            with self._lock:
                while len(self._cum) <= k - k0:
                    j = k0 + len(self._cum) - 1  # the slot whose end is being added
                    whole = self._util_integral(max(self.start, j * size), (j + 1) * size)
                    self._cum.append(self._cum[-1] + whole)
        return self._cum[k - k0] + self._util_integral(k * size, a)

    def counters(self, t: float) -> tuple[float, float]:
        """(energy in J, util-seconds) since start, as integrals of power and utilization: monotone.
        Remembered for the last ``t`` asked: energy and both NVLink directions read it each tick."""
        cached = self._counters
        if cached is not None and cached[0] == t:
            return cached[1]
        result = self._integrate(t)
        self._counters = (t, result)
        return result

    def _integrate(self, t: float) -> tuple[float, float]:
        idle, t = self.model.idle_w, max(t, 0.0)
        u = self._util_seconds(t)
        energy, util_s = idle * t + self._span_w * u, u
        for a, b, seg_util, watts in self._segments:
            if a >= t:
                break
            b = min(b, t)
            du = self._util_seconds(b) - self._util_seconds(a)
            energy += (watts - idle) * (b - a) - self._span_w * du
            util_s += seg_util * (b - a) - du
        return energy, util_s

    def energy_mj(self, t: float) -> int:
        return int((self._energy0_j + self.counters(t)[0]) * 1000)

    def nvlink_kib(self, t: float, rx: bool) -> int:
        """Cumulative KiB one link has carried: a share of its bandwidth while the GPU works."""
        share = 0.343 if rx else 0.35
        return self._nvlink0_kib + int(self.counters(t)[1] * self.model.nvlink_gbps * 1e9 / 1024 * share)

    def _nvlink_error_rate(self, link: int, counter: int) -> float:
        rate = self._nvlink_error_rates.get((link, counter))
        if rate is None:  # a link's rate depends only on the GPU, the link and the counter: hashed once
            rate = 0.0 if counter == 3 or unit_hash(self.key, 100 + link, counter) > 0.08 \
                else 3e-4 * unit_hash(self.key, 200 + link, counter)  # CRC data errors stay 0
            self._nvlink_error_rates[(link, counter)] = rate
        return rate

    def nvlink_errors(self, t: float, link: int, counter: int) -> int:
        rate = self._nvlink_error_rate(link, counter)
        return int(max(t, 0.0) * rate) if rate else 0

    def _link_rates(self, counter: int) -> tuple[float, ...]:
        """The non-zero error rates of the links for one NVLink error counter (hashed once)."""
        rates = self._nvlink_total_rates.get(counter)
        if rates is None:
            rates = tuple(r for r in (self._nvlink_error_rate(link, counter) for link in range(self.model.nvlinks))
                          if r)
            self._nvlink_total_rates[counter] = rates
        return rates

    def tick_counters(self, t: float) -> list[int]:
        """[energy_mj(t), pcie_replays(t), nvlink_kib(t, rx=False), nvlink_kib(t, rx=True),
        sum of nvlink_errors(t, link, c) over the links for c in 0..3]: the same numbers by the same arithmetic, in one
        pass (one counters() read, one clamp of t), for a request of every field at one tick."""
        energy, util_s = self.counters(t)
        kib = util_s * self.model.nvlink_gbps * 1e9 / 1024  # nvlink_kib's product, before its share
        tc = max(t, 0.0)
        out = [int((self._energy0_j + energy) * 1000), int(tc * self._replay_rate),
               self._nvlink0_kib + int(kib * 0.35), self._nvlink0_kib + int(kib * 0.343)]
        link_rates = self._all_link_rates
        if link_rates is None:
            link_rates = self._all_link_rates = tuple(self._link_rates(counter) for counter in range(4))
        out += [sum([int(tc * r) for r in rates]) if rates else 0 for rates in link_rates]
        return out

    def pcie_replays(self, t: float) -> int:
        return int(max(t, 0.0) * self._replay_rate)

    def pcie_kbs(self, t: float, rx: bool) -> int:
        """PCIe throughput in KB/s, TX or RX. Both directions are worked out together and kept for
        the last t asked: a collector reads both every tick."""
        cached = self._pcie
        if cached is None or cached[0] != t:
            util, a, (tx_noise, rx_noise) = self.state(t).util, self.start + t, self._noise_pcie
            # smooth_noise(self.key ^ (11 + d), a, 5.0) for direction d (0 TX, 1 RX), from its stream.
            cached = self._pcie = (t, (int((300 + util * self._pcie_kbs * 1) * (1 + 0.3 * tx_noise(a))),
                                       int((300 + util * self._pcie_kbs * 2) * (1 + 0.3 * rx_noise(a)))))
        return cached[1][1 if rx else 0]

    def ecc(self, t: float, uncorrected: bool, aggregate: bool) -> int:
        corrected, corrected_aggregate, uncorrected_count = self.ecc_counts(t)
        return uncorrected_count if uncorrected else corrected_aggregate if aggregate else corrected

    def ecc_counts(self, t: float) -> tuple[int, int, int]:
        """(corrected volatile, corrected aggregate, uncorrected) ECC errors at t. Remembered for the
        last t asked: a tick's ECC fields, retired pages and remapped rows all read them (a dozen
        reads per GPU), as a driver answers each from the same sampled counters."""
        cached = self._ecc_counts
        if cached is not None and cached[0] == t:
            return cached[1]
        corrected = sum(int(max(0.0, min(t, end) - at) * per_hour / 3600) for at, end, per_hour in self._ecc_rates)
        result = (corrected, corrected + self._ecc_corr0, bisect_right(self._unc_times, t))
        self._ecc_counts = (t, result)
        return result

    def xid_messages(self, f: Fault, first: bool) -> list[str]:
        """What the driver logs for XID fault ``f``; the GPU's first XID also names its UUID and serial."""
        pci = f"PCI:0000:{self.bus:02x}:00"
        busy, *_, pid = self.slot(self.start + f.at)
        pid = int(f.param("pid") or (pid + 64 * self.index if busy and f.code != 79 else 0))
        who = f"pid={pid}, name=python3" if pid else "pid='<unknown>', name=<unknown>"
        msgs = [f"NVRM: GPU at {pci}: {self.uuid}", f"NVRM: GPU Board Serial Number: {self.serial}"]
        msgs = msgs if first else []
        if f.code == 79:
            msgs.append(f"NVRM: GPU 0000:{self.bus:02x}:00.0: GPU has fallen off the bus.")
        msgs.append(f"NVRM: Xid ({pci}): {f.code}, {who}, {_XID_TEXT.get(f.code or 0, 'Ch 00000010')}")
        return msgs

    def state(self, t: float) -> SimpleNamespace:
        """Everything instantaneous at scenario time t (cached for the last t asked)."""
        cached = self.last_state
        if cached is not None and cached[0] == t:
            return cached[1]
        m, ld, a = self.model, self.load, self.start + t
        busy, level, amp, mem_share, mem_bus, nprocs, pid = self.slot(a)
        u = level + amp * math.sin(self._cycle_w * a + self._phase) if busy else 0.0
        seg = None
        if self._segments:
            i = bisect_right(self._segment_starts, t) - 1
            seg = self._segments[i] if i >= 0 and t < self._segments[i][1] else None
        if seg is not None:
            u = seg[2]
            busy = u > 0
        watts = seg[3] if seg is not None else m.idle_w + self._span_w * u
        limit, factor, reasons = m.power_limit_w, 1.0, 0 if busy else IDLE
        temp = self._temp_base + m.temp_rise_c * (watts - m.idle_w) / self._temp_span_w
        for kind, at, end, f in self._state_faults:
            if at <= t < end:
                if kind == "slow":
                    factor *= f.param("factor") or 1.0
                elif kind == "powercap":
                    limit, factor, reasons = min(limit, self._cap_w(f)), factor * 0.8, reasons | SW_POWER_CAP
                else:
                    frac = min(1.0, (t - at) / max(f.param("ramp_s") or 0.0, 1e-9))
                    temp += ((f.param("peak_c") or 91.0) - temp) * frac
                    factor *= 1 - 0.35 * frac
                    reasons |= SW_THERMAL | (HW_THERMAL if frac >= 0.5 else 0)
        # smooth_noise(key, a, 10.0), (key ^ 3, a, 7.0) and (key ^ 5, a, 30.0), from their streams.
        noise = ld.noise * self._noise_load(a) if busy else 0.0
        jitter = self._noise_jitter(a)
        power = min(limit, watts * (1 + 0.3 * noise + 0.01 * jitter) if seg is None
                    else watts * (0.997 + 0.003 * jitter))
        if busy and power >= 0.98 * limit:
            reasons |= SW_POWER_CAP
        procs: list[tuple[int, int, int | None]] = []  # (pid, bytes, MIG instance)
        if busy and self.mig:
            procs = [(pid + 64 * self.index + n, int(mem_share * m.mig_profiles[p][1]) * _MIB, n)
                     for n, p in enumerate(self.mig)]
        elif busy:
            job = int(mem_share * m.memory_mib * _MIB)
            shares = (0.97,) if nprocs == 1 else (0.85, 0.12)
            procs = [(pid + 64 * self.index + 7 * n, int(job * s) & ~0xFFFFF, None)
                     for n, s in enumerate(shares)]
        used = (int(m.memory_mib * 0.0066) << 20) + sum(p[1] for p in procs)
        state = SimpleNamespace(
            busy=busy, util=min(1.0, max(0.0, u + noise)) if busy else 0.0, mem_util=0.0, power=power,
            limit=limit, factor=factor, temp=temp + 0.7 * self._noise_temp(a),
            sm=m.sm_clock_max * (1 - 0.06 * u) * factor if busy else m.sm_clock_idle,
            mem_clock=m.mem_clock_max if busy else m.mem_clock_idle, reasons=reasons,
            used=min(used, m.memory_mib * _MIB), procs=procs)
        state.mem_util = state.util * mem_bus
        self.last_state = (t, state)
        return state

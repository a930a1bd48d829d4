"""Specifications of the GPU models the fake NVML can simulate, and what each one does not support.

Numbers are what ``nvidia-smi -q`` reports on the real boards (memory in MiB as NVML counts it,
default power limits, maximum and idle clocks, PCIe generation and width, NVLink link counts, MIG
profiles with their compute slices and memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping


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

"""The plain records every collector returns and the one protocol every collector follows.

Everything inside is in base units (bytes, seconds, watts, joules, hertz, celsius, ratios 0-1);
unknown is ``None``. Times are Unix epoch seconds, UTC.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

Value = float | int | str | None


@dataclass(slots=True)
class Sample:
    """One row of one sample table.

    ``kind`` names the table (``gpu``, ``gpu_process``, ``host``, ``interface``, ``disk``,
    ``filesystem``); ``key`` identifies the thing sampled within its node (``{"gpu_index": 0,
    "gpu_uuid": "GPU-…"}``, ``{"interface": "eth0"}``, ``{"device": "sda"}``, ``{"path": "/"}``);
    ``values`` are the measurements, named as the table's columns.
    """

    kind: str
    ts: float
    key: dict[str, Any]
    values: dict[str, Value]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "sample", **asdict(self)}


@dataclass(slots=True)
class Event:
    """One hardware or software event (XID, ECC, thermal, lost GPU, NVML error, …)."""

    ts: float
    kind: str
    severity: str  # info | warning | critical
    message: str
    code: str | None = None
    category: str | None = None
    recommended_action: str | None = None
    fatal: bool | None = None
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    source: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "event", **asdict(self)}


@dataclass(slots=True)
class GpuInfo:
    """The static description of one GPU (the inventory), refreshed when it changes."""

    index: int
    uuid: str
    model: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    power_limit_default_watts: float | None = None
    sm_clock_max_hz: float | None = None
    mem_clock_max_hz: float | None = None
    pcie_link_gen_max: int | None = None
    pcie_link_width_max: int | None = None
    mig_mode: int | None = None
    unsupported: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "gpu_info", **asdict(self)}


Record = Sample | Event | GpuInfo


def record_from_dict(d: dict[str, Any]) -> Record:
    """Inverse of ``to_dict``: used by the spool to read batches back."""
    d = dict(d)
    kind = d.pop("type")
    if kind == "sample":
        return Sample(**d)
    if kind == "event":
        return Event(**d)
    if kind == "gpu_info":
        return GpuInfo(**d)
    raise ValueError(f"unknown record type {kind!r}")


@runtime_checkable
class Collector(Protocol):
    """A telemetry source: ``check()`` says whether it is present on this machine, ``collect()``
    returns what it sees now, ``close()`` releases what it holds."""

    name: str

    def check(self) -> bool: ...

    def collect(self) -> list[Record]: ...

    def close(self) -> None: ...

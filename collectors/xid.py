"""XID classification from NVIDIA's XID catalogue (vendored from NVSentinel, see data/NOTICE.md),
and the parser for ``NVRM: Xid`` kernel-log lines."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

CATEGORIES = (
    "user/app",
    "framework",
    "gpu-hardware",
    "interconnect",
    "host",
    "maintenance",
    "cancelled",
    "timeout",
)

# What an operator should do for each of the catalogue's resolution buckets.
ACTIONS = {
    "RESTART_APP": "Restart the application; if the XID repeats on the same GPU, drain it and run diagnostics.",
    "RESET_GPU": "Drain the GPU, reset it (nvidia-smi -r) and run diagnostics (dcgmi diag -r 3).",
    "RESTART_BM": "Drain the node and power-cycle it; if the GPU falls off again, reseat or replace it.",
    "RESTART_VM": "Drain and restart the virtual machine.",
    "IGNORE": "Informational; no action needed.",
    "CHECK_MECHANICALS": "Check power delivery, cooling and GPU seating.",
    "CHECK_UVM": "Check the application's use of CUDA unified memory.",
    "UPDATE_SWFW": "Update the NVIDIA driver and GPU firmware.",
    "UNEXPECTED_ERR_REPORT_ISSUE": "Unexpected driver error: collect nvidia-bug-report.sh, report it, and drain "
    "the GPU if it repeats.",
    "WORKFLOW_XID_48": "Double-bit ECC error: drain the GPU, reset it so the page is retired or the row "
    "remapped; replace it if remapping failed.",
    "WORKFLOW_XID_45": "Preemptive cleanup after another fault: follow the XID that preceded it.",
    "WORKFLOW_NVLINK_ERR": "NVLink error: reset the GPUs on the link; if it recurs, inspect the NVLink/"
    "NVSwitch fabric.",
    "WORKFLOW_NVLINK5_ERR": "NVLink 5 error: reset the GPUs on the link; if it recurs, inspect the NVLink/"
    "NVSwitch fabric.",
    "FOLLOW_GUIDANCE_OF_LINKED_XID": "Follow the guidance of the linked XID.",
}

_MEMORY_WORDS = ("ECC", "DBE", "SBE", "CONTAINED", "DRAM", "REMAP", "FB_MEMORY", "LTC")


@dataclass(frozen=True, slots=True)
class XidInfo:
    code: int
    mnemonic: str
    resolution: str
    fatal: bool
    category: str
    severity: str
    recommended_action: str


def _category(mnemonic: str, resolution: str) -> str:
    if "NVLINK" in mnemonic or resolution.startswith("WORKFLOW_NVLINK"):
        return "interconnect"
    if any(word in mnemonic for word in _MEMORY_WORDS) or resolution == "WORKFLOW_XID_48":
        return "gpu-hardware"
    if resolution == "CHECK_UVM":
        return "framework"
    if resolution == "UPDATE_SWFW":
        return "maintenance"
    if resolution in ("RESTART_APP", "WORKFLOW_XID_45"):
        return "user/app"
    if resolution == "IGNORE":
        return "user/app"
    return "gpu-hardware"


def _severity(fatal: bool, resolution: str) -> str:
    if fatal:
        return "critical"
    if resolution == "IGNORE":
        return "info"
    return "warning"


@cache
def catalogue() -> dict[int, XidInfo]:
    """Every XID in the vendored catalogue, by code."""
    text = resources.files("collectors").joinpath("data/xid_errors_mapping_nvsentinel.csv").read_text()
    out: dict[int, XidInfo] = {}
    for row in csv.DictReader(text.splitlines()):
        code = int(row["xid"])
        resolution = row["resolution_bucket"].strip()
        fatal = row["fatality"].strip().upper() == "FATAL"
        mnemonic = row["mnemonic"].strip()
        out[code] = XidInfo(
            code=code,
            mnemonic=mnemonic,
            resolution=resolution,
            fatal=fatal,
            category=_category(mnemonic, resolution),
            severity=_severity(fatal, resolution),
            recommended_action=ACTIONS.get(resolution, ACTIONS["UNEXPECTED_ERR_REPORT_ISSUE"]),
        )
    return out


def classify(code: int) -> XidInfo:
    """The catalogue entry for ``code``; an XID the catalogue does not know is treated as an
    unexpected fatal error, since that is the safe reading."""
    known = catalogue().get(code)
    if known is not None:
        return known
    return XidInfo(
        code=code,
        mnemonic="UNKNOWN_XID",
        resolution="UNEXPECTED_ERR_REPORT_ISSUE",
        fatal=True,
        category="gpu-hardware",
        severity="critical",
        recommended_action=ACTIONS["UNEXPECTED_ERR_REPORT_ISSUE"],
    )


# NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.
_XID_LINE = re.compile(r"NVRM: Xid \(PCI:(?P<pci>[0-9a-fA-F:.]+)\): (?P<code>\d+),\s*(?P<rest>.*)$")


@dataclass(frozen=True, slots=True)
class KernelXid:
    pci_bus_id: str  # normalised: "0000:3b:00"
    code: int
    message: str
    pid: int | None


def parse_kernel_line(line: str) -> KernelXid | None:
    """Parse one kernel-log line (dmesg or /dev/kmsg format); ``None`` if it is not an XID line."""
    m = _XID_LINE.search(line)
    if m is None:
        return None
    rest = m.group("rest").strip()
    pid_match = re.search(r"pid=(\d+)", rest)
    return KernelXid(
        pci_bus_id=normalise_pci(m.group("pci")),
        code=int(m.group("code")),
        message=rest,
        pid=int(pid_match.group(1)) if pid_match else None,
    )


def normalise_pci(bus_id: str) -> str:
    """Reduce a PCI bus id to ``dddd:bb:dd`` lower case, the form kernel XID lines use.

    NVML gives ``00000000:3B:00.0`` (8-digit domain, function); the kernel gives ``0000:3b:00``.
    """
    bus_id = bus_id.strip().lower()
    if "." in bus_id:
        bus_id = bus_id.rsplit(".", 1)[0]
    parts = bus_id.split(":")
    if len(parts) == 3:
        domain, bus, dev = parts
        return f"{int(domain, 16):04x}:{bus[-2:]}:{dev[-2:]}"
    if len(parts) == 2:
        bus, dev = parts
        return f"0000:{bus[-2:]}:{dev[-2:]}"
    return bus_id

"""The environment a benchmark ran in, stored with every run (``bench_runs.environment``).

Two results are comparable only when what shapes them is the same: the device model, the data
type, the torch build and the driver (``db.stragglers.FINGERPRINT_KEYS``, which the straggler rule
applies), so a slower run after an upgrade does not look like a sick GPU. The keys
``gpu_model``, ``driver``, ``cuda`` and ``torch`` are the ones the dashboard and the ``bench_slow``
alert already read.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

# Keys whose change makes two results incomparable (``device_model`` covers CPU runs too).
# The CPU flags that decide which kernels a CPU can run (the full list is ~150 words of noise).
_CPU_FLAG_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "asimd", "sve", "bf16", "i8mm")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """``model name`` from /proc/cpuinfo (x86), else the platform's processor string."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The vector-instruction flags of the first CPU (``flags`` on x86, ``Features`` on ARM), sorted."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                words = line.split(":", 1)[1].split()
                return sorted({w for w in words if w.startswith(_CPU_FLAG_PREFIXES)})
    except OSError:
        pass
    return []


def _try(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or None when NVML says it cannot (unsupported, no permission, gone)."""
    try:
        return fn(*args)
    except Exception:
        return None


def gpu_identity(nvml: Any, *, index: int | None = None, uuid: str | None = None) -> dict[str, Any]:
    """Model, UUID and driver of one GPU through NVML (``pynvml`` or the fake), found by NVML
    ``index`` or by ``uuid`` (with or without NVML's ``GPU-`` prefix, as torch reports it).
    Unknown fields are None; an NVML that does not start gives ``{}``."""
    def text(v: Any) -> str | None:
        return v.decode() if isinstance(v, bytes) else None if v is None else str(v)

    try:
        nvml.nvmlInit()
    except Exception:
        return {}
    cuda = _try(nvml.nvmlSystemGetCudaDriverVersion)
    out: dict[str, Any] = {"driver": text(_try(nvml.nvmlSystemGetDriverVersion)),
                           "cuda_driver": f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else None}
    for i in range(_try(nvml.nvmlDeviceGetCount) or 0):
        handle = _try(nvml.nvmlDeviceGetHandleByIndex, i)
        this = text(_try(nvml.nvmlDeviceGetUUID, handle)) if handle is not None else None
        if this is None:
            continue
        if (index is not None and i == index) or (
                uuid is not None and this.removeprefix("GPU-") == uuid.removeprefix("GPU-")):
            out.update({"gpu_index": i, "gpu_uuid": this, "gpu_model": text(_try(nvml.nvmlDeviceGetName, handle))})
            break
    _try(nvml.nvmlShutdown)
    return out


def _torch_facts(device: str) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"torch": torch.__version__.split("+")[0], "torch_build": torch.__version__,
                           "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        idx = torch.device(device).index
        idx = torch.cuda.current_device() if idx is None else idx
        props = torch.cuda.get_device_properties(idx)
        out.update({"gpu_model": props.name, "gpu_uuid": str(props.uuid) if getattr(props, "uuid", None) else None,
                    "torch_device_index": idx, "compute_capability": f"{props.major}.{props.minor}",
                    "cudnn": torch.backends.cudnn.version()})
    return out


def fingerprint(device: str, *, dtype: str | None = None, nvml: Any = None,
                cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """What a run on ``device`` ("cpu", "cuda", "cuda:N") depends on. ``nvml`` is the NVML module
    (``pynvml`` by default on CUDA; injected in tests) used for the GPU's UUID and the driver."""
    facts = _torch_facts(device)
    cpu = cpu_model(cpuinfo)
    env: dict[str, Any] = {
        "host": socket.gethostname(),
        "device": device,
        "device_model": cpu,
        "dtype": dtype,
        "cpu_model": cpu,
        "cpu_flags": " ".join(cpu_flags(cpuinfo)),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        **facts,
    }
    if device.startswith("cuda"):
        if nvml is None:
            try:
                import pynvml  # nvidia-ml-py
            except ImportError:
                pynvml = None
            nvml = pynvml
        ident = gpu_identity(nvml, uuid=env.get("gpu_uuid")) if nvml is not None else {}
        env.update({k: v for k, v in ident.items() if v is not None})
        env["device_model"] = env.get("gpu_model")
    env.setdefault("driver", None)
    return env

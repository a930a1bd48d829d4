"""The peak a model-FLOP-utilization (MFU) figure is divided by: published dense TFLOP/s per GPU
model and dtype, looked up by the name NVML (and ``torch.cuda.get_device_name``) reports; on a CPU,
the rate a plain matmul reaches on it (no datasheet applies), measured with the shared harness or
taken from the gemm workload of the same run (``remember``).

Every figure is the datasheet's dense number: NVIDIA's tables print tensor-core rates "with
sparsity" (2:4 structured), twice the dense rate; those are halved here. ``fp32`` is the CUDA-core
FP32 rate, since torch keeps FP32 matmuls off TF32 by default (``tf32`` when
``torch.set_float32_matmul_precision`` allows it). Units: FLOP/s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.workloads.harness import measure

T = 1e12


@dataclass(frozen=True, slots=True)
class Peak:
    flops: float | None  # FLOP/s; None: unknown or the dtype has no hardware path
    source: str  # "datasheet: H100 SXM" or "measured: fp32 matmul 512x512 on cpu"


# name, NVML-name pattern (on the upper-cased name, "NVIDIA"/"Tesla"/"GeForce" removed, "-" as space),
# dense TFLOP/s by dtype. Sources, each the vendor's datasheet for that board:
_TABLE: list[tuple[str, str, dict[str, float]]] = [
    # NVIDIA H200 datasheet (H200 SXM): FP32 67; TF32 989, BF16 1,979, FP16 1,979, FP8 3,958 (with sparsity).
    ("H200 SXM", r"\bH200\b(?!.*\bNVL\b)", {"fp32": 67, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5, "fp8": 1979}),
    # NVIDIA H200 datasheet (H200 NVL): FP32 60; TF32 835, BF16 1,671, FP16 1,671, FP8 3,341 (with sparsity).
    ("H200 NVL", r"\bH200\b.*\bNVL\b", {"fp32": 60, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5, "fp8": 1670.5}),
    # NVIDIA H100 datasheet (H100 NVL): FP32 60; TF32 835, BF16 1,671, FP16 1,671, FP8 3,341 (with sparsity).
    ("H100 NVL", r"\bH100\b.*\bNVL\b", {"fp32": 60, "tf32": 417.5, "bf16": 835.5, "fp16": 835.5, "fp8": 1670.5}),
    # NVIDIA H100 datasheet (H100 PCIe): FP32 51; TF32 756, BF16 1,513, FP16 1,513, FP8 3,026 (with sparsity).
    ("H100 PCIe", r"\bH100\b.*\bPCIE\b", {"fp32": 51, "tf32": 378, "bf16": 756.5, "fp16": 756.5, "fp8": 1513}),
    # NVIDIA H100 datasheet (H100 SXM, NVML "H100 80GB HBM3"): FP32 67; TF32 989, BF16 1,979, FP16 1,979,
    # FP8 3,958 (with sparsity).
    ("H100 SXM", r"\bH100\b", {"fp32": 67, "tf32": 494.5, "bf16": 989.5, "fp16": 989.5, "fp8": 1979}),
    # NVIDIA A100 datasheet (PCIe and SXM alike): FP32 19.5; TF32 156, BF16 312, FP16 312 (dense).
    ("A100 PCIe", r"\bA100\b.*\bPCIE\b", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    ("A100 SXM", r"\bA100\b", {"fp32": 19.5, "tf32": 156, "bf16": 312, "fp16": 312}),
    # NVIDIA L40S datasheet: FP32 91.6; TF32 183, BF16 362.05, FP16 362.05, FP8 733 (dense).
    ("L40S", r"\bL40S\b", {"fp32": 91.6, "tf32": 183, "bf16": 362.05, "fp16": 362.05, "fp8": 733}),
    # NVIDIA L40 datasheet: FP32 90.5; TF32 90.5, BF16 181.05, FP16 181.05 (dense).
    ("L40", r"\bL40\b", {"fp32": 90.5, "tf32": 90.5, "bf16": 181.05, "fp16": 181.05}),
    # NVIDIA L4 datasheet: FP32 30.3; TF32 120, BF16 242, FP16 242, FP8 485 (with sparsity).
    ("L4", r"\bL4\b", {"fp32": 30.3, "tf32": 60, "bf16": 121, "fp16": 121, "fp8": 242.5}),
    # NVIDIA A10 datasheet: FP32 31.2; TF32 62.5, BF16 125, FP16 125 (dense).
    ("A10", r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125, "fp16": 125}),
    # NVIDIA Ada Lovelace architecture whitepaper, RTX 4090 column: FP32 82.6; TF32 82.6; BF16 and FP16
    # with FP32 accumulate (what torch's matmuls use) 165.2 (dense).
    ("RTX 4090", r"\bRTX 4090\b", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    # NVIDIA V100 datasheet: SXM2 FP32 15.7, tensor (FP16) 125; PCIe FP32 14, tensor 112. No TF32, no BF16.
    ("V100 PCIe", r"\bV100\b.*\bPCIE\b", {"fp32": 14, "fp16": 112}),
    ("V100 SXM2", r"\bV100\b", {"fp32": 15.7, "fp16": 125}),
    # NVIDIA T4 datasheet: FP32 8.1; mixed-precision (FP16/FP32) 65. No BF16.
    ("T4", r"\bT4\b", {"fp32": 8.1, "fp16": 65}),
]


def _normalise(model_name: str) -> str:
    name = re.sub(r"\b(NVIDIA|TESLA|GEFORCE)\b", " ", model_name.upper().replace("-", " "))
    return " ".join(name.split())


def board(model_name: str) -> str | None:
    """The table's name for an NVML model name (``"NVIDIA H100 80GB HBM3"`` -> ``"H100 SXM"``)."""
    name = _normalise(model_name)
    return next((b for b, pattern, _ in _TABLE if re.search(pattern, name)), None)


def datasheet_peak(model_name: str, dtype: str) -> Peak:
    """The published dense peak of this GPU for ``dtype`` (fp32, tf32, bf16, fp16, fp8)."""
    b = board(model_name)
    if b is None:
        return Peak(None, f"no datasheet peak for {model_name!r}")
    rates = next(r for name, _, r in _TABLE if name == b)
    rate = rates.get(dtype)
    return Peak(rate * T if rate is not None else None, f"datasheet: {b} {dtype} dense")


# Peaks measured in this process, by (device, dtype, torch threads): the gemm workload's result when
# it ran first (``remember``), else a quick matmul of our own.
_measured: dict[tuple[str, str, int], Peak] = {}


def _key(device: str, dtype: str) -> tuple[str, str, int]:
    import torch

    return device, dtype, torch.get_num_threads()


def remember(device: str, dtype: str, flops: float, source: str = "gemm workload") -> None:
    """Record a measured matmul rate (FLOP/s) as this device's peak for ``dtype`` (CPU devices), for
    the workloads that run after it in this process at the same thread count."""
    _measured[_key(device, dtype)] = Peak(flops, f"measured: {source}")


def measure_matmul(device: str, dtype: str, n: int = 512, budget_s: float = 0.5) -> Peak:
    """The rate of an n x n x n matmul on ``device`` in ``dtype``, timed with the shared harness."""
    import torch

    dt = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dt)
    stats = measure(lambda: torch.mm(a, b), device=device, warmup=2, min_iters=5, budget_s=budget_s)
    return Peak(2.0 * n**3 / stats.median, f"measured: {dtype} matmul {n}x{n} on {device}")


def device_peak(device: str, dtype: str) -> Peak:
    """The peak for MFU on ``device``: the datasheet for a known GPU, else a measured matmul rate
    (CPU), cached per process."""
    if device.startswith("cuda"):
        import torch

        return datasheet_peak(torch.cuda.get_device_name(torch.device(device)), dtype)
    key = _key(device, dtype)
    if key not in _measured:
        _measured[key] = measure_matmul(device, dtype)
    return _measured[key]


def gpu_index(device: str) -> int | None:
    """The local GPU index a ``cuda`` / ``cuda:N`` device names; None on a CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index

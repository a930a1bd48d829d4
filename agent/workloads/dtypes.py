"""Data-type names as stored in results (``fp32``, ``bf16``, ``fp16``) and which ones a device runs."""

from __future__ import annotations

from typing import Any

from agent.workloads.fingerprint import cpu_flags

# CPU flags that mean bf16 matmuls run natively rather than emulated (x86 AVX-512 BF16 / AMX, Arm BF16).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def torch_dtype(name: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def supported(device: str) -> list[str]:
    """fp32 always; bf16 where the device runs it natively; fp16 on CUDA (CPU fp16 GEMM is emulated)."""
    if device.startswith("cuda"):
        import torch

        return ["fp32", "bf16", "fp16"] if torch.cuda.is_bf16_supported(including_emulation=False) else ["fp32", "fp16"]
    return ["fp32", "bf16"] if any(f in cpu_flags() for f in _CPU_BF16_FLAGS) else ["fp32"]
